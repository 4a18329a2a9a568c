"""Hugging Face Spaces entry point: build the lora_app UI and launch it. Nothing else.

Locally: ``python app.py`` (or ``python -m lora_app serve``); ``GRADIO_SHARE=1`` for a public link.
"""

import os

from lora_app.hub_client import load_dotenv

# ./.env: HF_TOKEN and settings not already in the environment (a Space uses its secrets instead).
# Read before gradio / huggingface_hub are imported: they read HF_* variables at import time.
load_dotenv()

from lora_app.ui import CSS, build_app  # noqa: E402

if __name__ == "__main__":
    from lora_app.public_repos import mark_shared

    server_name = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    share = os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true")
    mark_shared(server_name, share)  # others can reach it: the Hub cache serves them only public repos offline
    build_app().queue(default_concurrency_limit=4).launch(server_name=server_name, share=share, css=CSS)
