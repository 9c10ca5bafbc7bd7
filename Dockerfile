# The mlsysops agent image: `docker build -t mlsysops:0.1.0 .`
# Every agent runs from it (`mlsysops agent continuum|cluster|node ...`, see `mlsysops deploy render`).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# A venv keeps the runtime stage a plain copy, without pip's build leftovers.
RUN python -m venv /opt/mlsysops && /opt/mlsysops/bin/pip install .

FROM python:3.11-slim
# Fixed ids: the rendered manifests set runAsUser/fsGroup 10001 and runAsNonRoot.
RUN groupadd --system --gid 10001 mlsysops \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mlsysops --create-home \
      --shell /usr/sbin/nologin mlsysops
COPY --from=build /opt/mlsysops /opt/mlsysops
ENV PATH=/opt/mlsysops/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/var/lib/mlsysops
USER 10001:10001
WORKDIR /var/lib/mlsysops
EXPOSE 8080
ENTRYPOINT ["mlsysops"]
CMD ["--help"]
