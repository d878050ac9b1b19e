"""Activities of the PubChem action: plain HTTP requests (stdlib only)."""

import json
import os
import urllib.error
import urllib.parse
import urllib.request

from temporalio import activity
from temporalio.exceptions import ApplicationError

#: PubChem's PUG REST base URL; tests point it at a local server.
BASE_URL_ENV = "PUBCHEM_BASE_URL"
DEFAULT_BASE_URL = "https://pubchem.ncbi.nlm.nih.gov/rest/pug"


def _get_json(path: str) -> dict:
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    url = f"{base.rstrip('/')}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        err.close()  # the error holds the open response
        if 400 <= err.code < 500:
            # A wrong name will not get better by asking again: no retry.
            raise ApplicationError(
                f"PubChem answered HTTP {err.code} for {url}", non_retryable=True
            ) from None
        raise


@activity.defn
def get_cid(compound: str) -> int:
    """The PubChem compound id of `compound`."""
    activity.logger.info("Looking up %s on PubChem", compound)
    data = _get_json(f"compound/name/{urllib.parse.quote(compound, safe='')}/cids/JSON")
    return int(data["IdentifierList"]["CID"][0])


@activity.defn
def get_properties(cid: int) -> dict:
    """Formula, weight and IUPAC name of compound `cid`."""
    fields = "MolecularFormula,MolecularWeight,IUPACName"
    data = _get_json(f"compound/cid/{cid}/property/{fields}/JSON")
    return data["PropertyTable"]["Properties"][0]
