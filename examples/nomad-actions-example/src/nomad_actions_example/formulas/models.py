"""Input and output of the formula analysis."""

from dataclasses import dataclass, field

from pydantic import BaseModel, Field


class FormulasInput(BaseModel):
    """Formulas to analyse, e.g. ['H2O', 'Ca(OH)2', 'C6H12O6']."""

    user_id: str
    upload_id: str | None = None
    formulas: list[str] = Field(min_length=1)
    #: Seconds of extra work per formula, so progress is visible in demos.
    delay_per_formula: float = Field(default=0.0, ge=0, le=10)


@dataclass
class ParsedFormula:
    """Element counts of one formula."""

    formula: str
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class FormulaMass:
    """Molar mass (g/mol) and mass fraction per element of one formula."""

    formula: str
    molar_mass: float
    mass_fractions: dict[str, float]


class FormulasReport(BaseModel):
    """The action's result."""

    masses: list[FormulaMass]
    heaviest: str
    lightest: str
    elements: dict[str, int]
