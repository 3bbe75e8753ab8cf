//! All contact with the kernel: safe paths inside an untrusted guest root, secure mounts, namespaces, capabilities and the per-operation sandbox.


