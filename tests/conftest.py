import torch


torch.set_num_threads(2)


def pytest_generate_tests(metafunc):
    """Run each shared-tester test that takes `head` once per head of the test class."""
    if "head" in metafunc.fixturenames and metafunc.cls is not None:
        heads = metafunc.cls.heads
        metafunc.parametrize("head", heads, ids=[ea_class.__name__ for ea_class, _ in heads])
    if "trainer_head" in metafunc.fixturenames and metafunc.cls is not None:
        heads = metafunc.cls.trainer_heads
        metafunc.parametrize("trainer_head", heads, ids=[model_class.__name__ for model_class in heads])
