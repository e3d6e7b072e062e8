//! Knocking over federation: `make_knock`/`send_knock` on both sides (work in progress).
