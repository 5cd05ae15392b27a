//! podlet's node agent library.
//!
//! This first layer is the Maglev consistent-hashing table ([`maglev`]) that the agent's
//! userspace Service load balancer uses to pick a backend per connection.

pub mod maglev;
