"""Writes rabbitmq.conf from the upstream image's variables and runs the broker in the
foreground as the `rabbitmq` user (the image's command)."""

import os
import pwd

user = os.environ["RABBITMQ_DEFAULT_USER"]
password = os.environ["RABBITMQ_DEFAULT_PASS"]
for name, value in (("RABBITMQ_DEFAULT_USER", user), ("RABBITMQ_DEFAULT_PASS", password)):
    if not value or "\n" in value:
        raise SystemExit(f"{name} must be one non-empty line")
port = int(os.environ["RABBITMQ_NODE_PORT"])
conf = "\n".join(
    [
        f"listeners.tcp.default = {port}",
        f"default_user = {user}",
        f"default_pass = {password}",
        f"default_vhost = {os.environ['RABBITMQ_DEFAULT_VHOST']}",
        "default_permissions.configure = .*",
        "default_permissions.read = .*",
        "default_permissions.write = .*",
        # Clients reach the broker through the container's network, never its loopback.
        "loopback_users = none",
        "log.console = true",
        "log.console.level = info",
        "log.file = false",
        "",
    ]
)
with open("/etc/rabbitmq/rabbitmq.conf", "w") as out:
    out.write(conf)
os.chmod("/etc/rabbitmq/rabbitmq.conf", 0o640)
account = pwd.getpwnam("rabbitmq")
os.chown("/etc/rabbitmq/rabbitmq.conf", 0, account.pw_gid)
for folder in ("/var/lib/rabbitmq", "/var/log/rabbitmq"):
    os.makedirs(folder, exist_ok=True)
    os.chown(folder, account.pw_uid, account.pw_gid)
os.setgid(account.pw_gid)
os.setgroups([account.pw_gid])
os.setuid(account.pw_uid)
os.environ.update(HOME="/var/lib/rabbitmq", RABBITMQ_LOGS="-")
os.execv("/usr/lib/rabbitmq/bin/rabbitmq-server", ["rabbitmq-server"])
