"""The identity file of SeaweedFS's S3 server (`weed mini -s3.config=`): one identity, allowed
every action. Standard library only: tools/containers/build.py stages this file next to the s3
image's entrypoint, which runs without parley_dev."""

from __future__ import annotations

import json
from pathlib import Path


def write_identities(path: Path, access_key: str, secret_key: str) -> Path:
    """Write the file at `path`, readable by its owner only; returns `path`."""
    path.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "parley",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    path.chmod(0o600)
    return path
