"""Activities of the formula analysis; each reports its progress."""

import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from nomad_actions import report_progress

from . import chemistry
from .models import FormulaMass, FormulasReport, ParsedFormula


@activity.defn
def parse_formulas(formulas: list[str], delay: float) -> list[ParsedFormula]:
    """Parse every formula; a malformed one fails the action (no retry helps)."""
    parsed = []
    for i, formula in enumerate(formulas, 1):
        try:
            parsed.append(ParsedFormula(formula, chemistry.parse(formula)))
        except ValueError as err:
            raise ApplicationError(str(err), non_retryable=True) from None
        time.sleep(delay)
        report_progress(i / len(formulas), f"parsed {formula}")
    return parsed


@activity.defn
def compute_masses(parsed: list[ParsedFormula], delay: float) -> list[FormulaMass]:
    """Molar masses and mass fractions."""
    out = []
    for i, item in enumerate(parsed, 1):
        total = chemistry.molar_mass(item.counts)
        fractions = {
            e: round(chemistry.ATOMIC_WEIGHTS[e] * n / total, 6) for e, n in item.counts.items()
        }
        out.append(FormulaMass(item.formula, round(total, 4), fractions))
        time.sleep(delay)
        report_progress(i / len(parsed), f"weighed {item.formula}")
    return out


@activity.defn
async def summarize(masses: list[FormulaMass]) -> FormulasReport:
    """Heaviest, lightest, and how often each element occurs."""
    elements: dict[str, int] = {}
    for m in masses:
        for e in m.mass_fractions:
            elements[e] = elements.get(e, 0) + 1
    by_mass = sorted(masses, key=lambda m: m.molar_mass)
    return FormulasReport(
        masses=masses,
        heaviest=by_mass[-1].formula,
        lightest=by_mass[0].formula,
        elements=dict(sorted(elements.items())),
    )
