//! Herald operator: custom resources for gateways and channels, and the controller that reconciles
//! them into gateway deployments.

pub mod admission;
pub mod app;
pub mod channels;
pub mod controller;
pub mod crd;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod programmed;
pub mod render;
pub mod rotation;
pub mod signing;
pub mod status;
