# Stand-in for the official `redis` image, from Debian's package, for deploy/smoke.sh where no image
# registry answers. Behaves like the official image for docker-compose.yml's command line.
ARG BASE_IMAGE=recursolve-smoke/debian-python:bookworm
FROM ${BASE_IMAGE}
# uid/gid 999 as in the official image (k8s/base/redis.yaml runs as 999); made before the package
# so that its install script reuses the account.
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown 999:999 /data
WORKDIR /data
USER 999:999
EXPOSE 6379
# Like the official image: without a config file, listen on all interfaces without protected mode.
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = redis-server ]; then shift; exec redis-server \"$@\" --protected-mode no; fi; exec \"$@\"", "redis-entrypoint"]
CMD ["redis-server"]
