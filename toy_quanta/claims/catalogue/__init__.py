"""The claims, by topic. Importing this package registers every paper and claim, in the order of
the table; `claims()` returns them."""

from toy_quanta.claims.catalogue import papers  # noqa: F401  (first: the claims name their papers)
from toy_quanta.claims.catalogue import quanta, grokking, omnigrok, mechanisms, emergence  # noqa: F401, E401
from toy_quanta.claims.ledger import Claim, registered


def claims() -> dict[str, Claim]:
    """Every claim of the catalogue, by id, in the table's order."""
    return registered()
