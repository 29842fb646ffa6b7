//! Where connections made on a tenant's behalf may go.
//!
//! Courier connects to hosts its tenants name: the endpoint of an S3 destination, the host
//! of a `rowsUrl`. Those connections start inside the operator's network, so every one of
//! them is checked, at connect time, against one policy:
//!
//! - [`special`]: the special-purpose address table (loopback, private, link-local, CGNAT,
//!   multicast, reserved, documentation, benchmarking, NAT64, 6to4, Teredo, mapped forms).
//! - [`policy`]: [`EgressPolicy`], that table minus the operator's allow-list
//!   (`COURIER_EGRESS_ALLOW`, or everything with `COURIER_ALLOW_PRIVATE_ENDPOINTS=true`).
//! - [`resolve`]: DNS resolvers for the AWS SDK and reqwest that check every address they
//!   hand out, so the check holds for the addresses actually connected to.
//!
//! The API checks the same policy when a destination is saved, for an early 422; the check
//! that counts is the one at connect time.

pub mod policy;
pub mod resolve;
pub mod special;

pub use policy::{Allowed, EgressPolicy, EgressRefused};
pub use resolve::{CheckedResolver, aws_http_client, find_refusal, reqwest_builder};
