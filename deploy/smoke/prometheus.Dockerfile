# Stand-in for the official `prom/prometheus` image, from Debian's package, for deploy/smoke.sh where
# no image registry answers. Same entrypoint, user and data path as the official image.
ARG BASE_IMAGE=recursolve-smoke/debian-python:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown 65534:65534 /prometheus
WORKDIR /prometheus
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
