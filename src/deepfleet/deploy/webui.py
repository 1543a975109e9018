"""Open-WebUI in the bundles: its port in the container and how its admin is made.

Open-WebUI makes the first account that signs up its admin. The bundles close that window:
the admin account is created at start from WEBUI_ADMIN_EMAIL / WEBUI_ADMIN_PASSWORD (the
password generated at render time, kept in a Secret or the 0600 .env; Open-WebUI creates the
account only while it has no users, then turns signup off) and ENABLE_SIGNUP is false, so no
one else can register; the admin adds users from the admin panel.
"""

from __future__ import annotations

WEBUI_PORT = 8080
ADMIN_EMAIL = "admin@deepfleet.local"
ADMIN_NAME = "deepfleet admin"
SETTINGS = {"ENABLE_OLLAMA_API": "false", "ENABLE_SIGNUP": "false"}
