# Peer systems for the benchmark: their drain throughput on the same PostgreSQL, so taskforge's
# figure from `make bench` can be read as a ratio against theirs.
#
#   make bench-peers   pgqueuer (a PostgreSQL job queue) into the venv, then
#                      bench/peers/pgqueuer_drain.py --repeat 3: N no-op jobs enqueued in
#                      batches of 500 while 2 consumer processes drain them, first enqueue to
#                      last completion on PostgreSQL's clock, the median run as JSON in
#                      bench/results/peers.json. Creates and drops its own database
#                      (peer_pgqueuer) through PEER_POSTGRES_URL. Not run in CI.
#
#   make bench-compare taskforge's batch drain and pgqueuer's, alternated round by round
#                      (bench/peers/compare.py, COMPARE_ROUNDS rounds; pgqueuer at each
#                      dequeue batch size of COMPARE_PEER_BATCH_SIZES, default 10 = as it
#                      ships and 100 = tuned for short jobs) on the server of
#                      PEER_POSTGRES_URL and the Redis db of COMPARE_REDIS_URL (flushed each
#                      round): the ratio in bench/results/compare.json. A shared VM drifts
#                      too much between minutes for figures taken apart to be compared.
#
# pgqueuer is no taskforge dependency (pyproject.toml does not name it); only this target
# installs it. `make bench` runs on embedded PostgreSQL unless TASKFORGE_POSTGRES_URL is set:
# point that at the server of PEER_POSTGRES_URL for both figures to come from one PostgreSQL.

PEER_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
PEER_JOBS ?= 20000
PEER_WORKERS ?= 2
PEER_REPEAT ?= 3
PEERS_OUT ?= bench/results/peers.json
COMPARE_ROUNDS ?= 3
COMPARE_PEER_BATCH_SIZES ?= 10,100
COMPARE_REDIS_URL ?= redis://127.0.0.1:6379/14
COMPARE_OUT ?= bench/results/compare.json
PGQUEUER_SPEC := pgqueuer[asyncpg]>=1.6,<2

.PHONY: bench-peers bench-compare

bench-peers: install ## run the peer systems' drain on the same PostgreSQL
	$(PY) -m pip install -q '$(PGQUEUER_SPEC)'
	@mkdir -p $(dir $(PEERS_OUT))
	$(PY) bench/peers/pgqueuer_drain.py --postgres-url '$(PEER_POSTGRES_URL)' \
		--jobs $(PEER_JOBS) --workers $(PEER_WORKERS) --repeat $(PEER_REPEAT) > $(PEERS_OUT).part
	@mv $(PEERS_OUT).part $(PEERS_OUT)
	@cat $(PEERS_OUT)

bench-compare: install ## taskforge's drain as a ratio of pgqueuer's, alternated on one server
	$(PY) -m pip install -q '$(PGQUEUER_SPEC)'
	@mkdir -p $(dir $(COMPARE_OUT))
	$(PY) bench/peers/compare.py --postgres-url '$(PEER_POSTGRES_URL)' \
		--redis-url '$(COMPARE_REDIS_URL)' --jobs $(PEER_JOBS) --workers $(PEER_WORKERS) \
		--rounds $(COMPARE_ROUNDS) --peer-batch-sizes $(COMPARE_PEER_BATCH_SIZES) > $(COMPARE_OUT).part
	@mv $(COMPARE_OUT).part $(COMPARE_OUT)
	@cat $(COMPARE_OUT)
