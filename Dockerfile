# One image for every qruntime service, built from the repository root so each service reads the
# one generated package. docker-compose.yml picks the service by its command.
FROM python:3.11-slim

WORKDIR /app
COPY constraints.txt pyproject.toml ./
COPY clients/python clients/python
COPY services services
RUN pip install --no-cache-dir -c constraints.txt ./clients/python . \
    && useradd --system --home /data qruntime && mkdir -p /data && chown qruntime /data
USER qruntime
ENV QRUNTIME_DATA_DIR=/data QRUNTIME_LOG_FORMAT=json QRUNTIME_HOST=0.0.0.0
EXPOSE 8443 8444 8445 8446 8447
CMD ["qruntime", "--help"]
