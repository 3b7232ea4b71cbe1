#!/bin/sh
# Runs once, when the Postgres volume is new: one database per service, owned by authbus.
set -eu
for db in authbus_user authbus_token authbus_event; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -c "CREATE DATABASE $db OWNER \"$POSTGRES_USER\""
done
