"""Hub datasets: ``datasets.load_dataset("owner/name")`` with plain-language errors.

With ``max_rows`` the split is streamed (``streaming=True``) and only the first rows are read:
keeping 10 rows of a dataset must not download and build all of it. (A split slice such as
``"train[:10]"`` would not help: ``datasets`` downloads and prepares the whole split first.)
"""

from __future__ import annotations

import re

import pandas as pd

from .config import ConfigError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$|^[A-Za-z0-9][\w.-]{0,95}$")
FIELD = "data.dataset_id"


def load_hub_frame(
    dataset_id: str,
    config: str | None = None,
    split: str = "train",
    token: str | None = None,
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Load one split of a Hub dataset as a DataFrame of Python values (a list column gives
    lists, as a local file's would); with ``max_rows``, only its first ``max_rows`` rows.

    Raises ConfigError (field ``data.dataset_id``) for a malformed id, a dataset that does
    not exist or cannot be read with the given token, a gated one, or an unknown split.
    """
    dataset_id = (dataset_id or "").strip()
    if not REPO_ID.match(dataset_id):
        raise ConfigError([f"{FIELD}: '{dataset_id}' is not a dataset id. Fix: write it as owner/name."])
    import datasets
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from .hub_client import endpoint_reachable, explain, refusal
    from .public_repos import Unverified

    if not constants.HF_HUB_OFFLINE and not endpoint_reachable():  # else ~25 s of retries, same answer
        raise ConfigError(
            [
                f"{FIELD}: cannot reach the Hub at {constants.ENDPOINT} to load '{dataset_id}'. "
                "Fix: check your connection, or upload the data as a file."
            ]
        )
    gated = (
        f"{FIELD}: '{dataset_id}' is gated: its authors must grant you access first. Fix: open "
        f"{constants.ENDPOINT}/datasets/{dataset_id}, accept its conditions, then log in here with a token "
        "of that account."
    )
    # Asked first: ``datasets`` answers a refused request (401/404: private, no or the wrong token)
    # from its cache, so a visitor could read the rows of another visitor's private dataset once the
    # server had loaded it (found by the breaker). Offline: public_repos.unverified's answer.
    refused = refusal(dataset_id, token, "dataset")
    if isinstance(refused, Unverified):
        raise ConfigError([f"{FIELD}: {refused}"])
    try:
        if refused is not None:
            raise refused
        if max_rows:
            import itertools

            stream = datasets.load_dataset(
                dataset_id, config or None, split=split or "train", token=token, streaming=True
            )
            rows = list(itertools.islice(stream, max_rows))  # a network read: errors surface here
            columns = list(stream.features) if stream.features else None
            return pd.DataFrame.from_records(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
        ds = datasets.load_dataset(dataset_id, config or None, split=split or "train", token=token)
    except GatedRepoError:
        raise ConfigError([gated]) from None
    except (RepositoryNotFoundError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
        # datasets turns GatedRepoError into DatasetNotFoundError ("is a gated dataset"); huggingface_hub's
        # own not-found text says "private or gated repo" for every missing one
        if isinstance(err, datasets.exceptions.DatasetNotFoundError) and "gated" in str(err).lower():
            raise ConfigError([gated]) from None
        login = "log in with a token that can read it" if token else "you are not logged in: log in if it is private"
        raise ConfigError(
            [
                f"{FIELD}: dataset '{dataset_id}' was not found, or is private "
                f"({type(err).__name__}). Fix: check the id, or {login}."
            ]
        ) from None
    except OSError as err:  # HfHubHTTPError (401 bad token, 5xx), connection errors
        raise ConfigError([explain(err, f"load the dataset '{dataset_id}'").replace("hub:", f"{FIELD}:", 1)]) from None
    except ValueError as err:
        msg = str(err).splitlines()[0][:300]
        raise ConfigError([f"data.split: {msg}. Fix: choose an existing config/split."]) from None
    except Exception as err:  # network errors and the like; the message says which
        raise ConfigError(
            [
                f"{FIELD}: could not load '{dataset_id}': {type(err).__name__}: "
                f"{str(err).splitlines()[0][:300]}. Fix: check the id and your connection."
            ]
        ) from None
    from .files import arrow_frame

    # (columns equal but for spaces kept apart, not refused: a visitor cannot rename a Hub dataset's)
    return arrow_frame(ds.with_format("arrow")[:], dataset_id, strict=False)
