using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Planner.Executor.Model;
using Planner.Executor.Parallelize;
using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

/// <summary>
/// NF4 storage (QLoRA's base): the shim's quantize and dequantize against the same algorithm written in PyTorch ops
/// (Debian's python3-torch), the error bound, tensor-parallel shards that dequantize exactly to the whole weight's
/// slices, and the frozen linear's forward and input gradient.
/// </summary>
public class Nf4Tests
{
    /// <summary>The algorithm in torch ops: blocks of 64 over the flattening, absmax, value/absmax (0 for an all-zero
    /// block), the nearest level with the first index on a tie (argmin), level × absmax.</summary>
    private const string Reference = """
        import json, sys
        import torch
        LEVELS = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
            -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534,
            0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0], dtype=torch.float32)
        out = []
        for case in json.load(open(sys.argv[1])):
            flat = torch.tensor(case, dtype=torch.float32)
            n = flat.numel()
            blocks = torch.cat([flat, flat.new_zeros((-n) % 64)]).view(-1, 64)
            absmax = blocks.abs().amax(dim=1, keepdim=True)
            scaled = torch.where(absmax > 0, blocks / absmax, torch.zeros_like(blocks))
            codes = (scaled.unsqueeze(-1) - LEVELS).abs().argmin(dim=-1)
            values = (LEVELS[codes] * absmax).reshape(-1)[:n]
            out.append({"codes": codes.reshape(-1)[:n].tolist(), "absmax": absmax.reshape(-1).tolist(), "values": values.tolist()})
        json.dump(out, open(sys.argv[2], "w"))
        """;

    /// <summary>value(i) = sin(a·i + b)·c rounded to float32.</summary>
    private static float[] Det(long n, double a, double b, double c) =>
        Enumerable.Range(0, (int)n).Select(i => (float)(Math.Sin(a * i + b) * c)).ToArray();

    private static JsonArray Python(IReadOnlyList<float[]> cases)
    {
        string input = Path.Combine(Path.GetTempPath(), $"planner-nf4-{Guid.NewGuid():N}");
        File.WriteAllText(input + ".py", Reference);
        File.WriteAllText(input + ".in.json", JsonSerializer.Serialize(cases.Select(c => c.Select(v => (double)v))));
        try
        {
            var psi = new ProcessStartInfo("/usr/bin/python3", [input + ".py", input + ".in.json", input + ".out.json"]) { RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"the NF4 reference failed (is python3-torch installed?): {err}");
            return JsonNode.Parse(File.ReadAllText(input + ".out.json"))!.AsArray();
        }
        finally
        {
            foreach (var f in new[] { ".py", ".in.json", ".out.json" })
                File.Delete(input + f);
        }
    }

    /// <summary>The codes of a packed NF4 tensor, one per value.</summary>
    private static long[] Codes(Nf4Tensor q, long n)
    {
        var bytes = q.Packed.ToLongArray();
        return Enumerable.Range(0, (int)n).Select(i => i % 2 == 0 ? bytes[i / 2] & 15 : bytes[i / 2] >> 4).ToArray();
    }

    [Fact]
    public void Quantize_then_dequantize_equals_a_pytorch_reference_and_stays_within_half_a_gap()
    {
        using var scope = DisposeScope.Begin();
        // A [48, 40] weight (30 whole blocks); [7, 13] (a short last block); an all-zero block, ties between levels
        // (value/absmax exactly half of the level 0.0796 or −0.0911: both neighbours equally near), and a block of
        // one sign.
        var zeros = new float[64].Concat(Det(64, 0.3, 0.2, 0.05)).ToArray();
        float up = (float)(Nf4Tensor.Levels[8] / 2), down = (float)(Nf4Tensor.Levels[6] / 2);
        var ties = new[] { 1f, up, down, -up, -down, 0.5f * up, up, down }.Concat(Det(56, 0.7, 0.1, 0.9)).ToArray();
        var shapes = new (long[] Shape, float[] Values)[]
        {
            ([48, 40], Det(48 * 40, 0.37, 0.1, 0.02)),
            ([7, 13], Det(91, 1.3, 0.4, 3)),
            ([2, 64], zeros),
            ([1, 64], ties),
            ([2, 32], Det(64, 0.05, 0.3, 1).Select(Math.Abs).ToArray()),
        };
        var expected = Python(shapes.Select(s => s.Values).ToList());
        double halfGap = Nf4Tensor.Levels.Zip(Nf4Tensor.Levels.Skip(1), (a, b) => (b - a) / 2).Max();
        for (int c = 0; c < shapes.Length; c++)
        {
            var (shape, values) = shapes[c];
            using var q = Nf4Tensor.Quantize(Tensor.From(values, shape));
            var got = q.Dequantize().ToFloatArray();
            var want = expected[c]!["values"]!.AsArray().Select(v => (float)(double)v!).ToArray();
            Assert.Equal(want, got); // exactly: the same fp32 operations
            Assert.Equal(want, q.Dequantize(tensorOps: true).ToFloatArray());
            Assert.Equal(expected[c]!["codes"]!.AsArray().Select(v => (long)v!), Codes(q, values.Length));
            var absmax = expected[c]!["absmax"]!.AsArray().Select(v => (float)(double)v!).ToArray();
            Assert.Equal(absmax, q.Absmax.ToFloatArray());
            for (int i = 0; i < values.Length; i++)
                Assert.True(Math.Abs(values[i] - got[i]) <= absmax[i / 64] * halfGap * (1 + 1e-6),
                    $"case {c}, value {i}: {values[i]} became {got[i]}, more than half the widest gap of its block's absmax {absmax[i / 64]}");
        }
        // A tie goes to the lower code: 0.0398 (half of level 8) is level 7 (0), −0.0455 (half of level 6) level 6;
        // their negatives are nearer one level.
        using var tied = Nf4Tensor.Quantize(Tensor.From(ties, 1, 64));
        Assert.Equal([15L, 7, 6, 7, 8], Codes(tied, 5));
    }

    [Theory]
    [InlineData(64, 64, Shard.Columns, 2)]  // a row-parallel projection at hidden 64: each block split over the ranks
    [InlineData(64, 128, Shard.Columns, 2)] // whole blocks in each rank's columns
    [InlineData(32, 64, Shard.Rows, 2)]     // a column-parallel one: whole rows
    [InlineData(96, 40, Shard.Rows, 2)]     // rows of 40: blocks across rows, the shard starting inside one
    [InlineData(96, 40, Shard.Columns, 2)]  // columns of 20 in rows of 40: runs of uneven lengths
    [InlineData(48, 96, Shard.Columns, 3)]
    public void Each_shard_dequantizes_to_its_slice_of_the_whole_weight(long rows, long cols, Shard shard, int tp)
    {
        using var scope = DisposeScope.Begin();
        var spec = new ParameterSpec("w", [rows, cols], shard, 0.02);
        var whole = Tensor.Normal([rows, cols], 0, 0.02, seed: 11);
        using var one = Nf4Tensor.Quantize(whole);
        var all = one.Dequantize();
        long blocks = (rows * cols + 63) / 64;
        Assert.Equal(rows * cols / 2, one.Packed.StorageBytes);
        Assert.Equal(blocks, one.Absmax.Numel);
        long codes = 0, absmaxes = 0;
        for (int rank = 0; rank < tp; rank++)
        {
            using var part = Nf4Tensor.Quantize(whole, t => TensorParallelism.Slice(t, spec, rank, tp));
            Assert.Equal(TensorParallelism.Slice(all, spec, rank, tp).ToFloatArray(), part.Dequantize().ToFloatArray());
            Assert.Equal(spec.ShardShape(tp), part.Shape);
            Assert.Equal(DType.UInt8, part.Packed.DType);
            Assert.Equal((rows * cols / tp + 1) / 2, part.Packed.Numel);
            codes += part.Packed.Numel;
            absmaxes += part.Absmax.Numel;
            // Whole blocks in each shard: exactly the blocks' absmax, no lengths.
            if (cols % 64 == 0 && (shard == Shard.Rows || cols / tp % 64 == 0))
            {
                Assert.Null(part.Runs);
                Assert.Equal(blocks / tp, part.Absmax.Numel);
            }
        }
        // Together the shards hold the codes once, and each block's absmax once per shard row it is cut in (at most one
        // more block than whole ones per row of each shard).
        Assert.Equal(one.Packed.Numel, codes);
        Assert.InRange(absmaxes, blocks, blocks + rows * tp);
    }

    [Fact]
    public void The_frozen_linear_computes_with_the_dequantized_weight_and_passes_the_input_gradient()
    {
        using var scope = DisposeScope.Begin();
        using var q = Nf4Tensor.Quantize(Tensor.Normal([48, 64], 0, 0.05, seed: 3));
        var w = q.Dequantize();
        var x = Tensor.Normal([2, 5, 64], 0, 1, seed: 4);
        x.RequiresGrad = true;
        var y = q.Linear(x);
        var reference = x.Detach();
        reference.RequiresGrad = true;
        var yRef = F.Linear(reference, w);
        Assert.Equal(yRef.ToFloatArray(), y.ToFloatArray());
        var g = Tensor.Normal([2, 5, 48], 0, 1, seed: 5);
        y.Backward(g);
        yRef.Backward(g);
        var dx = x.Grad!.ToFloatArray();
        var dxRef = reference.Grad!.ToFloatArray();
        Assert.True(dx.Zip(dxRef, (a, b) => Math.Abs(a - b)).Max() <= 1e-5, "the input gradient differs from W's");
        Assert.False(q.Packed.RequiresGrad);
        Assert.Null(q.Absmax.Grad);
    }

    [Fact]
    public void The_frozen_linear_keeps_no_dequantized_weight_between_forward_and_backward()
    {
        // A 64 MiB weight once dequantized to fp32 (above glibc's largest mmap threshold, so its memory leaves the
        // process when freed): the resident memory after the forward shows what the graph keeps for the backward.
        using var scope = DisposeScope.Begin();
        using var q = Nf4Tensor.Quantize(Tensor.Normal([4096, 4096], 0, 0.02, seed: 6));
        const long weightBytes = 4096L * 4096 * 4;
        long Kept(Func<Tensor, Tensor> linear)
        {
            using var inner = DisposeScope.Begin();
            var x = Tensor.Normal([1, 4, 4096], 0, 1, seed: 7);
            x.RequiresGrad = true;
            long before = TorchRuntime.Memory(Device.Cpu).Current;
            var y = linear(x);
            long kept = TorchRuntime.Memory(Device.Cpu).Current - before;
            y.Sum().Backward();
            Assert.Equal(x.Shape, x.Grad!.Shape);
            return kept;
        }
        // Dequantizing into an ordinary linear: autograd saves the weight for x's gradient.
        long naive = Kept(x =>
        {
            using var w = q.Dequantize();
            return F.Linear(x, w);
        });
        long nf4 = Kept(q.Linear);
        Assert.True(naive > weightBytes * 3 / 4, $"the plain linear kept {naive} bytes (the test cannot see a kept weight)");
        Assert.True(nf4 < weightBytes / 4, $"the NF4 linear kept {nf4} bytes after its forward");
    }

    [Fact]
    public void Levels_are_qloras()
    {
        Assert.Equal(16, Nf4Tensor.Levels.Count);
        Assert.Equal(-1, Nf4Tensor.Levels[0]);
        Assert.Equal(0, Nf4Tensor.Levels[7]);
        Assert.Equal(1, Nf4Tensor.Levels[15]);
        Assert.True(Nf4Tensor.Levels.Zip(Nf4Tensor.Levels.Skip(1)).All(p => p.First < p.Second));
        Assert.Equal("0.7229568362236023", Nf4Tensor.Levels[14].ToString("R", CultureInfo.InvariantCulture));
    }
}
