# wshub on Debian 12: a build stage with the -dev packages, and a slim
# runtime stage with only the shared libraries build/wshub links.
#
#   docker build -t wshub .
#   docker run --rm -p 8080:8080 wshub
#   docker run --rm -p 8080:8080 -e WSHUB_REDIS=redis://redis:6379 wshub
#
# Every flag can be given as an argument after the image name, or as a
# WSHUB_* environment variable (see docs/operations.md).

FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential libwslay-dev libhiredis-dev libev-dev \
      libhttp-parser-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# `-o deps`: the packages above are all `make all` needs; skip the
# Makefile's own apt-get step (it would also install the test tools).
RUN make -o deps -j2 all && build/wshub --help >/dev/null

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libev4 libwslay1 libhiredis0.14 libhttp-parser2.9 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin wshub
COPY --from=build /src/build/wshub /usr/local/bin/wshub
COPY --from=build /src/packaging/wshub.1 /usr/local/share/man/man1/wshub.1
COPY --from=build /src/LICENSE /usr/local/share/doc/wshub/LICENSE
USER wshub:wshub
EXPOSE 8080
# `docker stop` waits 10 s before SIGKILL: shut down within it (the
# graceful shutdown takes up to this plus 2 s for Redis).  Raise both
# together (`docker stop -t`, `--stop-timeout`).
ENV WSHUB_SHUTDOWN_TIMEOUT=7
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wshub"]
CMD ["--listen", "0.0.0.0:8080"]
