import pytest

from .harness import Harness


@pytest.fixture
def harness(tmp_path):
    return Harness(str(tmp_path / "cache"))
