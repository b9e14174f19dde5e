"""Runs `weed mini` with S3 on port 8333 and one identity, from S3_ACCESS_KEY and S3_SECRET_KEY
(the same flags as parley_dev.infra.LocalS3, with every port inside this container)."""

import os
from pathlib import Path

# Staged next to this file by tools/containers/build.py (parley_dev is not in the image).
from s3_identities import write_identities

access_key = os.environ.get("S3_ACCESS_KEY", "")
secret_key = os.environ.get("S3_SECRET_KEY", "")
if len(access_key) < 3 or len(secret_key) < 8:
    raise SystemExit("S3_ACCESS_KEY (3+ characters) and S3_SECRET_KEY (8+ characters) are required")
data = Path(os.environ.get("S3_DATA_DIR", "/data"))
identities = write_identities(data / "s3-identities.json", access_key, secret_key)
command = [
    "weed",
    "mini",
    f"-dir={data}",
    "-ip=127.0.0.1",
    "-ip.bind=0.0.0.0",
    "-s3.port=8333",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    f"-s3.config={identities}",
    "-webdav=false",
    "-admin.ui=false",
    "-master.telemetry=false",
]
os.execvp("weed", command)
