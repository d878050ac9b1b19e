"""Formula parsing and standard atomic weights (IUPAC, abridged), no dependencies."""

import re

ATOMIC_WEIGHTS = {
    "H": 1.008, "He": 4.0026, "Li": 6.94, "Be": 9.0122, "B": 10.81, "C": 12.011,
    "N": 14.007, "O": 15.999, "F": 18.998, "Ne": 20.180, "Na": 22.990, "Mg": 24.305,
    "Al": 26.982, "Si": 28.085, "P": 30.974, "S": 32.06, "Cl": 35.45, "Ar": 39.948,
    "K": 39.098, "Ca": 40.078, "Ti": 47.867, "V": 50.942, "Cr": 51.996, "Mn": 54.938,
    "Fe": 55.845, "Co": 58.933, "Ni": 58.693, "Cu": 63.546, "Zn": 65.38, "Ga": 69.723,
    "Ge": 72.630, "As": 74.922, "Se": 78.971, "Br": 79.904, "Sr": 87.62, "Zr": 91.224,
    "Mo": 95.95, "Ag": 107.87, "Cd": 112.41, "Sn": 118.71, "I": 126.90, "Ba": 137.33,
    "La": 138.91, "W": 183.84, "Pt": 195.08, "Au": 196.97, "Hg": 200.59, "Pb": 207.2,
}  # fmt: skip

_TOKEN = re.compile(r"([A-Z][a-z]?|\(|\)|\d+)")


def parse(formula: str) -> dict[str, int]:
    """Element counts of `formula` (parentheses allowed: 'Ca(OH)2').

    Raises:
        ValueError: unknown element or malformed formula, naming it.
    """
    tokens = _TOKEN.findall(formula)
    if "".join(tokens) != formula or not tokens:
        raise ValueError(f"malformed formula {formula!r}")
    stack: list[dict[str, int]] = [{}]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        count = 1
        if token != "(" and i < len(tokens) and tokens[i].isdigit():
            count = int(tokens[i])
            i += 1
        if token == "(":
            stack.append({})
        elif token == ")":
            if len(stack) == 1:
                raise ValueError(f"unbalanced ')' in {formula!r}")
            group = stack.pop()
            for element, n in group.items():
                stack[-1][element] = stack[-1].get(element, 0) + n * count
        elif token.isdigit():
            raise ValueError(f"unexpected number in {formula!r}")
        elif token not in ATOMIC_WEIGHTS:
            raise ValueError(f"unknown element {token!r} in {formula!r}")
        else:
            stack[-1][token] = stack[-1].get(token, 0) + count
    if len(stack) != 1:
        raise ValueError(f"unbalanced '(' in {formula!r}")
    return stack[0]


def molar_mass(counts: dict[str, int]) -> float:
    """Molar mass in g/mol."""
    return sum(ATOMIC_WEIGHTS[e] * n for e, n in counts.items())
