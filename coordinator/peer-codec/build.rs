//! Compiles `proto/peer.proto` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/peer.proto");
    let descriptors = protox::compile(["peer.proto"], ["proto"])?;
    // Log values and snapshot data as `Bytes`: a batch is handed to the
    // store, to every follower and to the retransmit buffer, and a
    // reference-counted buffer is shared where a `Vec` would be copied.
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
