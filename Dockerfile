# troupe, built in one stage and run from a small one (the binary is stripped:
# Cargo.toml's release profile).
# docker build -t troupe .   (or: docker compose up, see docker-compose.yml)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
# actix-http with troupe's fix (vendor/README.md), patched in by Cargo.toml.
COPY vendor vendor
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin troupe \
    && rm -rf src
COPY src src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin troupe

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/troupe --create-home troupe \
    && mkdir -p /var/lib/troupe/uploads && chown -R troupe /var/lib/troupe
# (The uploads directory exists in the image so that a named volume mounted there starts
# out owned by troupe, not root.)
COPY --from=build /src/target/release/troupe /usr/local/bin/troupe
USER troupe
WORKDIR /var/lib/troupe
ENV TROUPE_BIND=0.0.0.0:8080 \
    TROUPE_UPLOAD_DIR=/var/lib/troupe/uploads \
    RUST_LOG=info
EXPOSE 8080
# /readyz over a plain socket (no curl in the image): 0 while ready, 1 otherwise, also
# while draining after SIGTERM. It reads TROUPE_BIND like the server.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["troupe", "healthcheck"]
CMD ["troupe"]
