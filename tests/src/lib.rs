//! System tests that start real `peer` and `wallet` processes (on loopback,
//! or inside network namespaces the test creates). None exist yet: the
//! consensus core is tested by simulation inside `dag`.
