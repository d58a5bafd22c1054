"""The shared strategies only make ensembles that the checker accepts."""

from hypothesis import given, settings

from mncompile.passes.check import check_ensemble
from tests.strategies import ensembles


@settings(max_examples=60, deadline=None)
@given(ensembles())
def test_strategy_ensembles_are_valid(e) -> None:
    assert check_ensemble(e) is e
