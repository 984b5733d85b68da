import logging

import datasets
import pytest
import torch
import transformers


torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: a second intra-op thread only adds synchronisation (20x slower and more on a busy
    2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_library_logging():
    """The example scripts' logging setup sets transformers' and datasets' global verbosity and format, and the level
    of ea_hf's loggers: put them back."""
    verbosity = transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity()
    ea_hf_level = logging.getLogger("ea_hf").level
    yield
    transformers.utils.logging.set_verbosity(verbosity[0])
    transformers.utils.logging.reset_format()
    datasets.utils.logging.set_verbosity(verbosity[1])
    logging.getLogger("ea_hf").setLevel(ea_hf_level)


def pytest_generate_tests(metafunc):
    """Run each shared-tester test that takes `head` once per head of the test class."""
    if "head" in metafunc.fixturenames and metafunc.cls is not None:
        heads = metafunc.cls.heads
        metafunc.parametrize("head", heads, ids=[ea_class.__name__ for ea_class, _ in heads])
    if "trainer_head" in metafunc.fixturenames and metafunc.cls is not None:
        heads = metafunc.cls.trainer_heads
        metafunc.parametrize("trainer_head", heads, ids=[model_class.__name__ for model_class in heads])
