"""The one server kit every qruntime service is built with.

settings: a frozen settings object from flags and QRUNTIME_* env vars; logging: structlog setup;
errors: domain errors and their one mapping to gRPC statuses; auth: the verified caller;
tokens: signing and verifying tokens; interceptors: request ids, errors, auth, storable text;
outbound: channels and credentials for calls to other services; store: database engines and paging;
server: health, reflection, graceful shutdown around a list of components.
"""
