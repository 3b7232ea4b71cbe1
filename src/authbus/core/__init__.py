"""What the three services share.

Settings, SQL, Redis, errors, app factory, logging, health, metrics.

Nothing here is built at import time; `create_app(settings)` of each service builds what it needs.
"""
