# One image for every Infery role; the first argument picks it (infery/entrypoint.py):
#   control-plane | ext-proc | envoy | healthcheck | any other command (e.g. `infery certs ...`).
#
# The base is pinned by digest. It is the python:3.11-slim manifest-list digest that public
# Dockerfiles pin (this repository could not pull images when it was written); before a release,
# re-check it with `docker buildx imagetools inspect python:3.11-slim` and update it here.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# --- build: a venv with exactly the locked dependencies, then the project itself (no deps).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/infery
COPY requirements/runtime.txt /tmp/requirements.txt
RUN /opt/infery/bin/pip install --require-hashes --no-deps -r /tmp/requirements.txt
COPY . /src
RUN /opt/infery/bin/pip install --no-deps /src

# --- runtime: the venv only, run by an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/infery infery \
 && mkdir -p /spool /server /client /files \
 && chown infery:infery /spool /server /client /files
# (volumes mounted on /spool, /server, /client, /files start owned by the unprivileged user)
COPY --from=build /opt/infery /opt/infery
ENV PATH=/opt/infery/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INFERY_HOST=0.0.0.0 \
    INFERY_HOME=/home/infery/.infery
USER 10001:10001
WORKDIR /home/infery
EXPOSE 8080 8081 8082 18000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["infery-entrypoint", "healthcheck"]
ENTRYPOINT ["infery-entrypoint"]
CMD ["control-plane"]
