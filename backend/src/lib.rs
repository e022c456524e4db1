//! gpair-backend: the backend daemon (metadata sync, offload, recall, caps, quotas) and the
//! FUSE mount client. Built on the s3fs-gateway and the protocol in gpair-proto; no
//! functionality yet.
