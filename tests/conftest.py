"""Shared pytest setup."""

# ===== BEGIN local Hub server (tests/hub_server.py, see /work/shared/notes/hub-api.md) =====
# huggingface_hub / datasets / transformers read HF_ENDPOINT, HF_HOME, HF_HUB_DISABLE_XET ... at
# import time, so the fake Hub is started here, at conftest import, before any test module
# imports them. Tests pass tokens explicitly: HF_TOKEN is removed from the environment.
import os
import sys
import tempfile

import pytest

from hub_server import HubServer

HUB_USERS = {"hf_alice": "alice", "hf_bob": "bob", "hf_alice_read": "alice"}
HUB_READ_ONLY = {"hf_alice_read"}
HUB = HubServer(users=HUB_USERS, read_only_tokens=HUB_READ_ONLY, oauth_user="alice")
HUB.start()

_HF_HOME = tempfile.mkdtemp(prefix="lora_app_hf_home_")
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
             "HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH"):
    os.environ.pop(_var, None)
os.environ.update({
    "HF_ENDPOINT": HUB.url,
    "HF_HOME": _HF_HOME,
    "HF_HUB_DISABLE_XET": "1",  # uploads take the LFS path, which the fake Hub serves
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
})


def _patch_already_imported_hub_libraries(url: str) -> None:
    """Fallback for libraries imported before this conftest (e.g. by a plugin)."""
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        constants.ENDPOINT = url
        constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
        constants.HF_HUB_DISABLE_XET = True
    if "datasets" in sys.modules:
        import datasets.config as dconfig

        dconfig.HF_ENDPOINT = url
        dconfig.HUB_DATASETS_URL = url + "/datasets/{repo_id}/resolve/{revision}/{path}"
        dconfig.HUB_DATASETS_HFFS_URL = "hf://datasets/{repo_id}@{revision}/{path}"


def _no_parquet_export() -> None:
    if "datasets" in sys.modules:
        import datasets.config as dconfig

        if hasattr(dconfig, "USE_PARQUET_EXPORT"):
            dconfig.USE_PARQUET_EXPORT = False  # skip the datasets-server.<host> lookup


_patch_already_imported_hub_libraries(HUB.url)


@pytest.fixture
def hub_server():
    """The local fake Hub (tokens: hf_alice, hf_bob, hf_alice_read = alice read-only), emptied for each test."""
    HUB.start()  # a test may have stopped it; restarts on the same port
    HUB.reset()
    _no_parquet_export()
    yield HUB
    HUB.start()
# ===== END local Hub server =====
