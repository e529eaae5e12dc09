using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace Planner.Cli.Commands;

/// <summary>
/// The executor against an equivalent PyTorch script on this machine: the same GPT-2-style model (LayerNorm, separate
/// q/k/v projections, causal attention, tanh-GeLU MLP, tied embeddings), batch, sequence, fp32, AdamW, one thread,
/// one process pinned to the same core, the same allocator settings. Reports both median step times, their ratio, and the executor's MFU against the measured matmul rate.
/// </summary>
public static class ExecutorBench
{
    private const int Layers = 4, Hidden = 256, Heads = 4, Vocab = 1024, Seq = 128, Batch = 8, Steps = 12, Warmup = 2;

    private const string Script = """
import math, os, sys, time, torch
os.sched_setaffinity(0, {0})  # the core the executor's one rank is pinned to
torch.set_num_threads(1); torch.manual_seed(0)
L, H, NH, V, S, B, steps, warm = [int(a) for a in sys.argv[1:9]]
D = H // NH
def p(*shape, std=0.02): return torch.nn.Parameter(torch.randn(*shape) * std)
wte, wpe = p(V, H), p(S, H, std=0.01)
blocks = [dict(l1w=torch.nn.Parameter(torch.ones(H)), l1b=torch.nn.Parameter(torch.zeros(H)), qw=p(H, H), qb=p(H), kw=p(H, H), kb=p(H),
               vw=p(H, H), vb=p(H), ow=p(H, H), ob=p(H), l2w=torch.nn.Parameter(torch.ones(H)), l2b=torch.nn.Parameter(torch.zeros(H)),
               f1w=p(4 * H, H), f1b=p(4 * H), f2w=p(H, 4 * H), f2b=p(H)) for _ in range(L)]
lfw, lfb = torch.nn.Parameter(torch.ones(H)), torch.nn.Parameter(torch.zeros(H))
params = [wte, wpe, lfw, lfb] + [t for b in blocks for t in b.values()]
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
F = torch.nn.functional
mask = torch.ones(S, S, dtype=torch.bool).triu(1)
def heads(t): return t.view(B, S, NH, D).transpose(1, 2)
def step(ids, tgt):
    x = F.embedding(ids, wte) + wpe[:S]
    for b in blocks:
        h = F.layer_norm(x, [H], b['l1w'], b['l1b'], 1e-5)
        q, k, v = heads(F.linear(h, b['qw'], b['qb'])), heads(F.linear(h, b['kw'], b['kb'])), heads(F.linear(h, b['vw'], b['vb']))
        s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(D)
        a = torch.matmul(torch.softmax(s.masked_fill(mask, float('-inf')), -1), v).transpose(1, 2).reshape(B, S, H)
        x = x + F.linear(a, b['ow'], b['ob'])
        h = F.layer_norm(x, [H], b['l2w'], b['l2b'], 1e-5)
        x = x + F.linear(F.gelu(F.linear(h, b['f1w'], b['f1b']), approximate='tanh'), b['f2w'], b['f2b'])
    logits = F.linear(F.layer_norm(x, [H], lfw, lfb, 1e-5), wte).view(B * S, V)
    loss = F.cross_entropy(logits, tgt.view(-1))
    loss.backward(); opt.step(); opt.zero_grad()
times = []
for i in range(steps):
    ids = torch.randint(0, V, (B, S)); tgt = torch.randint(0, V, (B, S))
    t0 = time.perf_counter(); step(ids, tgt); times.append(time.perf_counter() - t0)
t = sorted(times[warm:]); print(t[len(t) // 2])
""";

    /// <summary>Measures and prints.</summary>
    public static void Run(TextWriter stdout)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"planner-exec-bench-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "config.json"),
                $$"""{"model_type": "gpt2", "n_layer": {{Layers}}, "n_embd": {{Hidden}}, "n_head": {{Heads}}, "n_positions": {{Seq}}, "vocab_size": {{Vocab}}, "n_inner": null, "tie_word_embeddings": true}""");
            string plan = Path.Combine(dir, "plan.json");
            File.WriteAllText(plan, $$"""
                {"model": "{{Path.Combine(dir, "config.json")}}", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": 1, "cp": 1, "zero": 0,
                 "mbs": {{Batch}}, "gbs": {{Batch}}, "seq": {{Seq}}, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"}
                """);
            var ours = Process("dotnet",
                [typeof(ExecutorBench).Assembly.Location, "run", "--plan", plan, "--steps", Steps.ToString(), "--warmup", Warmup.ToString(), "--json",
                 "--history", Path.Combine(dir, "history.csv")], dir);
            double oursStep = (double)JsonNode.Parse(ours)!["measured"]!["step_time_s"]!;
            string script = Path.Combine(dir, "bench.py");
            File.WriteAllText(script, Script);
            var theirs = Process("/usr/bin/python3", [script, .. new[] { Layers, Hidden, Heads, Vocab, Seq, Batch, Steps, Warmup }.Select(x => x.ToString())], dir);
            double torchStep = double.Parse(theirs.Trim(), CultureInfo.InvariantCulture);
            double flops = 6.0 * Batch * Seq * (12.0 * Layers * Hidden * Hidden + Vocab * Hidden) + 12.0 * Batch * Seq * Seq * Hidden * Layers;
            double matmul = MatmulRate();
            stdout.WriteLine($"executor GPT ({Layers} layers, hidden {Hidden}, batch {Batch}x{Seq}, fp32, 1 thread): {oursStep * 1e3:F1} ms/step; " +
                             $"PyTorch script: {torchStep * 1e3:F1} ms/step; ratio {oursStep / torchStep:F3}; " +
                             $"executor model FLOP rate {flops / oursStep / 1e9:F1} GFLOP/s");
            stdout.WriteLine($"matmul rate on the same core ({MatmulDim}x{MatmulDim}x{MatmulDim} fp32, 1 thread): {matmul / 1e9:F1} GFLOP/s; " +
                             $"executor MFU {flops / oursStep / matmul:P1}, PyTorch script MFU {flops / torchStep / matmul:P1}");
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    private const int MatmulDim = 1024;

    /// <summary>This machine's matmul rate (FLOP/s) through the executor's binding, on the core the runs above used.</summary>
    private static double MatmulRate()
    {
        // After both runs: the pinning is inherited by every thread and process this one starts.
        CpuAffinity.Pin([0]);
        Executor.Torch.TorchRuntime.Threads = 1;
        using var a = Executor.Torch.Tensor.Normal([MatmulDim, MatmulDim], 0, 1, seed: 1);
        using var b = Executor.Torch.Tensor.Normal([MatmulDim, MatmulDim], 0, 1, seed: 2);
        double seconds = Profiling.ProfileRank.Median(() => a.MatMul(b).Dispose(), 1.0, Executor.Torch.Device.Cpu);
        return 2.0 * MatmulDim * MatmulDim * MatmulDim / seconds;
    }

    private static string Process(string file, string[] args, string dir)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.Environment["OPENBLAS_NUM_THREADS"] = "1";
        psi.Environment["OMP_NUM_THREADS"] = "1";
        // The allocator settings of the executor's rank processes, so that both sides reuse freed memory alike.
        foreach (var (key, value) in RankProcesses.AllocatorSettings)
            psi.Environment[key] = value;
        using var p = System.Diagnostics.Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{Path.GetFileName(file)} failed: {error.Split('\n').FirstOrDefault(l => l.Length > 0)}");
        return output;
    }
}
