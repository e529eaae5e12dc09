using System.Diagnostics;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>Parity of a mixture-of-experts model (<see cref="MoeRunTests.Config"/>: a dense first block, then 4
/// experts of which each token takes 2, and a shared expert) under the layouts that need no expert parallelism.</summary>
public sealed partial class ExecutorParityTests
{
    public static TheoryData<string, int, int, int, int, string> MoeLayouts() => new()
    {
        // Each expert's gate and up split by rows, down by columns; the router whole on both ranks, scoring its half
        // of the sequence (MoE blocks with tp > 1 need sequence parallelism, as in Megatron-Core).
        { "tp2-sp", 2, 1, 1, 0, "none" },
        // Blocks 0-1 (the dense one and a MoE one) on stage 0, the load-balancing loss's gradient from both stages.
        { "pp2", 1, 2, 1, 0, "none" },
        { "zero1-dp2", 1, 1, 2, 1, "none" },
        { "zero2-dp2", 1, 1, 2, 2, "none" },
        // Recomputed blocks route again in the backward, and carry the load-balancing loss's gradient again.
        { "pp2-full-recompute", 1, 2, 1, 0, "full" },
        { "tp2-sp-pp2", 2, 2, 1, 0, "none" },
    };

    [Theory]
    [MemberData(nameof(MoeLayouts))]
    public void Moe_layout_reproduces_the_single_process_run(string name, int tp, int pp, int dp, int zero, string recompute)
    {
        lock (_ref)
            if (!_ref.Single.ContainsKey("moe/0.001"))
            {
                var (loss, p) = _ref.Run("moe", "single", 1, 1, 1, 0, 1, "none", false, 3);
                _ref.Single["moe/0.001"] = (loss, p[0]);
                var (l1, p1) = _ref.Run("moe", "single-1", 1, 1, 1, 0, 1, "none", false, 1);
                _ref.Single["moe/0.001/1"] = (l1, p1[0]);
            }
        CheckParity("moe", name, tp, pp, dp, zero, 1, recompute, tp > 1);
    }

    internal static (int Code, string Output, string Error) Planner(string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "planner.dll"));
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"planner {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return (p.ExitCode, output.Result, error.Result);
    }
}
