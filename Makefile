# `make check` runs exactly what CI runs.
.PHONY: check test bench fmt

check:
	bash .ci/run

test:
	cargo test --workspace --locked

bench:
	cargo bench -p nimbus-ring --bench ring

fmt:
	cargo fmt --all
