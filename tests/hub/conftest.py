"""Fixtures that run the real, unmocked ``huggingface_hub`` client against the local test hub (hub_server.py).

``hub`` starts a fresh server per test, points ``huggingface_hub`` at it, switches offline mode off, gives the test an
isolated, empty ``HF_HOME`` / cache / token / dynamic-modules directory (under ``tmp_path``), and restores everything
afterwards. Environment variables are set too, so subprocesses started by a test see the same hub and cache.

Why patching is needed on top of ``HF_ENDPOINT``: ``huggingface_hub.constants`` reads the environment once, at import,
and by the time this conftest runs other test packages have usually imported ``transformers`` (hence
``huggingface_hub``). Besides, the server port is only known once it has started. Values copied at import time:

- ``constants.ENDPOINT`` / ``HUGGINGFACE_CO_URL_TEMPLATE`` (``hf_hub_url`` formats the template),
- ``huggingface_hub.hf_api.api.endpoint`` (the module-level ``HfApi`` behind ``huggingface_hub.create_repo`` & co),
- ``huggingface_hub.utils._http._HUB_ORIGINS`` / ``constants.HF_URL_HOSTS`` (which redirects stay "on the Hub"),
- ``constants.HF_HUB_OFFLINE`` (``is_offline_mode()`` returns it; the Makefile exports ``HF_HUB_OFFLINE=1``),
- ``constants.HF_HUB_DISABLE_XET`` (hf_xet is installed: without this, uploads would take the Xet path, which
  this server does not implement),
- cache / token paths (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_TOKEN_PATH``...) and ``transformers``'
  ``HF_MODULES_CACHE`` (where ``trust_remote_code`` code is copied),
- ``transformers.utils.hub._hf_api``: transformers creates one ``HfApi`` lazily and keeps it (and its endpoint),
- ``datasets.config`` ``HF_ENDPOINT`` / ``HUB_DATASETS_URL`` / ``HF_HUB_OFFLINE`` / ``HF_DATASETS_CACHE`` (read once at
  import: ``datasets.load_dataset`` builds its ``HfApi`` / ``HfFileSystem`` from them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_server import DEFAULT_TOKEN, DEFAULT_USER, HubServer  # noqa: E402


def _patch_hub_client(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    from urllib.parse import urlsplit

    import huggingface_hub
    import huggingface_hub.hf_api
    import huggingface_hub.utils._http as hf_http
    from huggingface_hub import constants

    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    modules = home / "modules"
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_MODULES_CACHE": str(modules),
        "HF_TOKEN": DEFAULT_TOKEN,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HUGGINGFACE_CO_STAGING",
              "HF_HUB_ETAG_TIMEOUT", "HF_ASSETS_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(k, raising=False)

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname})
    monkeypatch.setattr(hf_http, "_HUB_ORIGINS", hf_http._HUB_ORIGINS | {hf_http._url_origin(endpoint)})
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_ASSETS_CACHE", str(home / "assets"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))

    try:
        import transformers.dynamic_module_utils as dmu
        import transformers.utils.hub as thub
    except ImportError:
        return
    # transformers copies the dynamic-modules dir at import, and caches one HfApi (with its endpoint) in
    # `transformers.utils.hub._hf_api` the first time it needs one
    monkeypatch.setattr(thub, "HF_MODULES_CACHE", str(modules))
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(modules))
    if hasattr(thub, "_hf_api"):
        monkeypatch.setattr(thub, "_hf_api", None)


def _patch_datasets_client(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """``datasets.config`` copies ``HF_ENDPOINT`` / offline mode / the cache path at import, like
    ``huggingface_hub.constants``: point ``datasets.load_dataset`` at the test hub and an isolated cache."""
    try:
        import datasets.config as dconfig
    except ImportError:  # pragma: no cover
        return
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(dconfig, "HF_ENDPOINT", endpoint)
    monkeypatch.setattr(dconfig, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(dconfig, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(dconfig, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(dconfig, "HF_UPDATE_DOWNLOAD_COUNTS", False)


@pytest.fixture
def hub_server():
    """A fresh test hub (its request log is printed at teardown; pytest shows it for failing tests)."""
    server = HubServer().start()
    try:
        yield server
    finally:
        server.stop()
        print(f"\n---- test hub request log ({server.url}) ----\n{server.format_log()}")


@pytest.fixture
def hub(hub_server, tmp_path, monkeypatch):
    """The test hub with the real huggingface_hub client pointed at it and an isolated, empty cache."""
    home = tmp_path / "hf_home"
    _patch_hub_client(monkeypatch, hub_server.url, home)
    _patch_datasets_client(monkeypatch, hub_server.url, home)
    hub_server.home = home
    hub_server.cache_dir = home / "hub"
    hub_server.token = DEFAULT_TOKEN
    hub_server.user = DEFAULT_USER
    yield hub_server


@pytest.fixture
def offline(monkeypatch):
    """Switch the client back to offline mode (what HF_HUB_OFFLINE=1 does at import)."""
    from huggingface_hub import constants

    def _go_offline():
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    return _go_offline
