//! One probe per kind of readiness check; the wait engine drives them all.

pub mod amqp;
pub mod command;
pub mod dns;
pub mod file;
pub mod grpc;
pub mod http;
pub mod k8s;
pub mod kafka;
pub mod mysql;
pub mod nats;
pub mod ping;
pub mod postgres;
pub mod redis;
pub mod service;
pub mod socket;
pub mod tcp;
pub mod zookeeper;
