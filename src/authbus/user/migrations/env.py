from authbus.core.migrate import run_env
from authbus.user.models import metadata

run_env(metadata)
