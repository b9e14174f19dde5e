"""Runs `weed mini` with S3 on port 8333 and one identity, from S3_ACCESS_KEY and S3_SECRET_KEY
(the same flags as parley_dev.infra.LocalS3, with every port inside this container)."""

import json
import os
from pathlib import Path

access_key = os.environ.get("S3_ACCESS_KEY", "")
secret_key = os.environ.get("S3_SECRET_KEY", "")
if len(access_key) < 3 or len(secret_key) < 8:
    raise SystemExit("S3_ACCESS_KEY (3+ characters) and S3_SECRET_KEY (8+ characters) are required")
data = Path(os.environ.get("S3_DATA_DIR", "/data"))
identities = data / "s3-identities.json"
identities.write_text(
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
identities.chmod(0o600)
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
