#!/usr/bin/env bash
# Regenerates the offline query cache `.sqlx/` (or, with --check, fails when it is not current)
# against a throwaway PostgreSQL cluster with the migrations applied. Builds read `.sqlx/` only
# (`SQLX_OFFLINE=true` in .cargo/config.toml), so nothing else needs a database to compile.
# Needs sqlx-cli (`cargo install sqlx-cli --version 0.9.0 --locked --no-default-features --features postgres,rustls`).
set -euo pipefail
cd "$(dirname "$0")/.."

check=()
[[ "${1:-}" == "--check" ]] && check=(--check)

bin=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do bin="$d"; break; done
[[ -z "$bin" ]] && bin="$(dirname "$(command -v initdb)")"

work="$(mktemp -d)"
as=()
if [[ "$(id -u)" == 0 ]]; then
  # PostgreSQL refuses to run as root.
  chown postgres "$work"
  as=(runuser -u postgres --)
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
stop() { "${as[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap stop EXIT

"${as[@]}" "$bin/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
"${as[@]}" "$bin/pg_ctl" -D "$work/data" -w -l "$work/log" \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $work -c fsync=off" start >/dev/null

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
sqlx migrate run --source migrations >/dev/null
SQLX_OFFLINE=false cargo sqlx prepare "${check[@]}" -- --all-targets
