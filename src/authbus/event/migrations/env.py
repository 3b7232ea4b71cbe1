from authbus.core.migrate import run_env
from authbus.event.models import metadata

run_env(metadata)
