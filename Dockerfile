# One image for every qruntime service, built from the repository root so each service reads the
# one generated package. docker-compose.yml picks the service by its command.
FROM python:3.11-slim

# bubblewrap and libseccomp: the sandbox of uploaded programs (qruntime_kit.sandbox). It also needs the
# container to allow unprivileged user namespaces; where it does not, those jobs end RUNTIME_UNAVAILABLE
# saying why, and everything else works.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap libseccomp2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY constraints.txt pyproject.toml ./
COPY clients/python clients/python
COPY services services
RUN pip install --no-cache-dir -c constraints.txt ./clients/python . \
    && useradd --system --home /data qruntime && mkdir -p /data && chown qruntime /data
USER qruntime
ENV QRUNTIME_DATA_DIR=/data QRUNTIME_LOG_FORMAT=json QRUNTIME_HOST=0.0.0.0
EXPOSE 8443 8444 8445 8446 8447 8080
CMD ["qruntime", "--help"]
