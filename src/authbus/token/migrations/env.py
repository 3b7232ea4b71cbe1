from authbus.core.migrate import run_env
from authbus.token.models import metadata

run_env(metadata)
