//! With the `etcd` feature, compiles the subset of etcd's gRPC API the
//! bench uses (`proto/etcd/*.proto`, etcd's field numbers) with protox, so
//! no system `protoc` is needed, and generates tonic clients for it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd");
    if std::env::var_os("CARGO_FEATURE_ETCD").is_none() {
        return Ok(());
    }
    let files = ["rpc.proto", "kv.proto", "v3lock.proto", "v3election.proto"];
    let descriptors = protox::compile(files, ["proto/etcd"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
