"""Hub datasets: ``datasets.load_dataset("owner/name")`` with plain-language errors."""

from __future__ import annotations

import re

import pandas as pd

from .config import ConfigError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$|^[A-Za-z0-9][\w.-]{0,95}$")
FIELD = "data.dataset_id"


def load_hub_frame(dataset_id: str, config: str | None = None, split: str = "train",
                   token: str | None = None, max_rows: int | None = None) -> pd.DataFrame:
    """Load one split of a Hub dataset as a DataFrame.

    Raises ConfigError (field ``data.dataset_id``) for a malformed id, a dataset that does
    not exist or cannot be read with the given token, a gated one, or an unknown split.
    """
    dataset_id = (dataset_id or "").strip()
    if not REPO_ID.match(dataset_id):
        raise ConfigError([f"{FIELD}: '{dataset_id}' is not a dataset id. Fix: write it as owner/name."])
    import datasets
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        ds = datasets.load_dataset(dataset_id, config or None, split=split or "train", token=token)
    except GatedRepoError:
        raise ConfigError([f"{FIELD}: '{dataset_id}' is gated. Fix: accept its terms on the Hub, then log in "
                           "with a token of that account."]) from None
    except (RepositoryNotFoundError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
        raise ConfigError([f"{FIELD}: dataset '{dataset_id}' was not found, or is private "
                           f"({type(err).__name__}). Fix: check the id, or log in with a token that can read it."]) from None
    except ValueError as err:
        msg = str(err).splitlines()[0][:300]
        raise ConfigError([f"data.split: {msg}. Fix: choose an existing config/split."]) from None
    except Exception as err:  # network errors and the like; the message says which
        raise ConfigError([f"{FIELD}: could not load '{dataset_id}': {type(err).__name__}: "
                           f"{str(err).splitlines()[0][:300]}. Fix: check the id and your connection."]) from None
    if max_rows:
        ds = ds.select(range(min(max_rows, len(ds))))
    return ds.to_pandas()
