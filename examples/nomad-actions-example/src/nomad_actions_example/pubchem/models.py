"""Input and output of the PubChem action."""

from pydantic import BaseModel, Field


class PubChemInput(BaseModel):
    """What to look up."""

    user_id: str
    upload_id: str | None = None
    compound: str = Field(description="Compound name, e.g. 'aspirin'")


class PubChemOutput(BaseModel):
    """What PubChem knows about the compound."""

    compound: str
    cid: int
    properties: dict
