# testament in a container.
#   docker build -t testament .
#   docker run -p 1883:1883 -p 9883:9883 -v testament-data:/var/lib/testament testament
# The configuration is deploy/testament.toml (mount your own over
# /etc/testament/testament.toml); state and the development key set live in
# the volume.

# Build: the release binary, from the locked dependencies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin testament

# Run: a small Debian with the binary, as a user of its own.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/testament --shell /usr/sbin/nologin testament \
    && mkdir -p /var/lib/testament /etc/testament \
    && chown testament:testament /var/lib/testament
COPY --from=build /src/target/release/testament /usr/local/bin/testament
COPY deploy/testament.toml /etc/testament/testament.toml
USER testament
VOLUME ["/var/lib/testament"]
EXPOSE 1883 9883
# SIGTERM is a planned stop: wills pause and resume after the restart.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/testament"]
CMD ["serve", "--config", "/etc/testament/testament.toml"]
