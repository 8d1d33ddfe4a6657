"""Fetch public datasets from the Hugging Face hub (``motionguard dataset download``).

Only DeepAction is known.  The download goes through ``huggingface_hub``
(resumable, verified); on a machine that cannot reach the hub, or when the
dataset's terms have not been accepted, it fails with a :class:`DatasetError`
that says what to do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from detectors.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    repo_type: str
    description: str
    licence: str


KNOWN_DATASETS: dict[str, HubDataset] = {
    "deepaction": HubDataset(
        repo_id="faridlab/deepaction_v1",
        repo_type="dataset",
        description="DeepAction v1 (Bohacek & Farid): Pexels real clips and six text-to-video generators, "
        "one folder per source, one sub-folder per action",
        licence="AI-generated clips CC BY 4.0; Pexels clips under the Pexels licence",
    ),
}


def download_dataset(
    name: str,
    out: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Download dataset ``name`` into ``out`` and return the folder."""
    if name not in KNOWN_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(KNOWN_DATASETS))}")
    entry = KNOWN_DATASETS[name]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    target = Path(out)
    logger.info("downloading %s (%s) to %s", entry.repo_id, entry.repo_type, target)
    try:
        path = snapshot_download(
            repo_id=entry.repo_id,
            repo_type=entry.repo_type,
            revision=revision,
            local_dir=str(target),
            token=token,
        )
    except GatedRepoError as e:
        raise DatasetError(
            f"{entry.repo_id} is gated: accept its terms on https://huggingface.co/datasets/{entry.repo_id} "
            "and log in (`hf auth login` or HF_TOKEN) before downloading"
        ) from e
    except RepositoryNotFoundError as e:
        raise DatasetError(f"{entry.repo_id} was not found on the hub (or it needs a login): {e}") from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        # LocalEntryNotFoundError (no network, nothing cached) is an OSError subclass.
        raise DatasetError(
            f"could not download {entry.repo_id} from the Hugging Face hub: {_first_line(e)}. "
            "This machine may have no access to huggingface.co; download the dataset elsewhere "
            f"and point `embed` at its folder (layout <Source>/<action>/<clip>.mp4)"
        ) from e
    return Path(path)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
