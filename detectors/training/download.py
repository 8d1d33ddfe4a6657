"""Fetch public datasets from the Hugging Face hub (``motionguard dataset download``).

Only DeepAction is known.  The download goes through ``huggingface_hub``
(resumable, verified) from the hub it is configured for (``HF_ENDPOINT`` names a
mirror); on a machine that cannot reach the hub, or when the dataset's terms
have not been accepted, it fails with one :class:`DatasetError` line that says
what was tried and what to do (see :mod:`detectors.hub`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from detectors.errors import DatasetError
from detectors.hub import first_line, hub_endpoint, hub_failure_message, is_hub_failure, quiet_hub_retries

logger = logging.getLogger(__name__)

#: The folder layout DeepAction is downloaded in and ``load_dataset`` reads.
DEEPACTION_LAYOUT = "<Source>/<action>/<clip>.mp4"


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
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    target = Path(out)
    logger.info("downloading %s (%s) from %s to %s", entry.repo_id, entry.repo_type, hub_endpoint(), target)
    with quiet_hub_retries() as noise:  # one error line, not a retry warning per attempt
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
                f"{entry.repo_id} is gated: accept its terms on {hub_endpoint()}/datasets/{entry.repo_id} "
                "and log in (`hf auth login` or HF_TOKEN) before downloading"
            ) from e
        except RepositoryNotFoundError as e:
            raise DatasetError(
                f"{entry.repo_id} was not found on the hub at {hub_endpoint()} (or it needs a login): {first_line(e)}"
            ) from e
        except Exception as e:
            if not (is_hub_failure(e) or noise.first_failure is not None or isinstance(e, (OSError, ValueError))):
                raise
            # LocalEntryNotFoundError (no network, nothing cached) is an OSError subclass.
            raise DatasetError(
                hub_failure_message(f"the dataset {entry.repo_id}", e, noise)
                + f"; or download it elsewhere and point `embed` at its folder (layout {DEEPACTION_LAYOUT})"
            ) from e
    return Path(path)
