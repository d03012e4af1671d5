//! `ciel`: one binary, whose subcommands call into the workspace crates.
//! This file only parses arguments and maps results to exit codes.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cli;

/// ciel — confidential inference runtime.
///
/// Verifies hardware attestation evidence (AMD SEV-SNP, Intel TDX/SGX,
/// NVIDIA GPUs) and, in later subcommands, seals models, releases keys and
/// serves inference inside confidential VMs.
#[derive(Debug, Parser)]
#[command(name = "ciel", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify or produce attestation evidence.
    #[command(subcommand)]
    Attest(cli::attest::AttestCommand),
    /// Encrypt a model into the sealed format under a fresh data key.
    Seal(cli::seal::SealArgs),
    /// Sentence-embedding models: bundle one for sealing.
    #[command(subcommand)]
    Embeddings(cli::embeddings::EmbeddingsCommand),
    /// Decrypt a sealed model with its key file (for debugging).
    Unseal(cli::seal::UnsealArgs),
    /// Print a sealed model's header.
    Inspect(cli::seal::InspectArgs),
    /// The key broker: attested release of model keys.
    #[command(subcommand)]
    Kbs(cli::kbs::KbsCommand),
    /// Guest images and the measurements they produce.
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    /// Attestation collateral: bundles for verifiers with no network.
    #[command(subcommand)]
    Collateral(cli::collateral::CollateralCommand),
    /// The untrusted host side: launching confidential guests.
    #[command(subcommand)]
    Host(cli::host::HostCommand),
    /// The guest runtime.
    #[command(subcommand)]
    Enclave(cli::enclave::EnclaveCommand),
    /// Verify a serving guest's attestation (through its host) against a policy.
    Verify(cli::client::VerifyArgs),
    /// Chat with a verified guest (one-shot or interactive, streaming).
    Chat(cli::client::ChatArgs),
    /// A local OpenAI-compatible endpoint that forwards only to a verified guest.
    Proxy(cli::client::ProxyArgs),
    /// The whole system on this machine: key broker, host and guest as
    /// separate processes on the SIMULATED platform, verified and asked a question.
    Demo(cli::demo::DemoArgs),
    /// Benchmarks, each figure beside its baseline in the same run.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    // In the guest image this binary is `/init`: as PID 1 *by that name*
    // it sets up the VM and runs itself, with the kernel command line's
    // words after `--`, as the runtime (`ciel_enclave::init`). As PID 1 by
    // any other name (a container's entrypoint, `/ciel`) it is the CLI:
    // the container runtime owns mounts and power.
    let mut argv = std::env::args_os();
    let program = argv.next().map(std::path::PathBuf::from);
    if std::process::id() == 1
        && program
            .as_deref()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "init")
    {
        let program = program.unwrap_or_else(|| "/init".into());
        let args: Vec<_> = argv.collect();
        ciel_enclave::init::run(&program, &args);
    }
    // A blocked signal mask survives exec: the runtime started by PID 1
    // takes its signals back.
    let _ = ciel_enclave::init::supervised_signals().thread_unblock();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attest(cmd) => cli::attest::run(cmd),
        Command::Seal(a) => cli::seal::run_seal(a),
        Command::Embeddings(cmd) => cli::embeddings::run(cmd),
        Command::Unseal(a) => cli::seal::run_unseal(a),
        Command::Inspect(a) => cli::seal::run_inspect(a),
        Command::Kbs(cmd) => cli::kbs::run(cmd),
        Command::Image(cmd) => cli::image::run(cmd),
        Command::Collateral(cmd) => cli::collateral::run(cmd),
        Command::Host(cmd) => cli::host::run(cmd),
        Command::Enclave(cmd) => cli::enclave::run(cmd),
        Command::Verify(a) => cli::client::run_verify(a),
        Command::Chat(a) => cli::client::run_chat(a),
        Command::Proxy(a) => cli::client::run_proxy(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ciel: {e:#}");
            ExitCode::from(2)
        }
    }
}
