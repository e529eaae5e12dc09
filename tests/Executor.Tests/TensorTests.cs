using Planner.Executor.Torch;
using Xunit;

namespace Planner.Executor.Tests;

public class TensorTests
{
    [Fact]
    public void Creation_shapes_views_and_copies_round_trip()
    {
        using var scope = DisposeScope.Begin();
        var t = Tensor.From([1f, 2, 3, 4, 5, 6], 2, 3);
        Assert.Equal(new long[] { 2, 3 }, t.Shape);
        Assert.Equal(DType.Float32, t.DType);
        Assert.Equal(Device.Cpu, t.Device);
        Assert.Equal(new float[] { 1, 4, 2, 5, 3, 6 }, t.Transpose(0, 1).Contiguous().ToFloatArray());
        Assert.Equal(new float[] { 2, 3, 5, 6 }, t.Narrow(1, 1, 2).Contiguous().ToFloatArray());
        var parts = t.Chunk(3, 1);
        Assert.Equal(3, parts.Length);
        Assert.Equal(new float[] { 3, 6 }, parts[2].Contiguous().ToFloatArray());
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6 }, Tensor.Cat([t, t], 0).ToFloatArray());
        Assert.Equal(new long[] { 3, 2 }, t.View(3, 2).Shape);
        Assert.Equal(new double[] { 0, 0.5, 1, 1.5 }, Tensor.Arange(0, 2, 0.5).ToDoubleArray());
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, t.To(DType.Int64).ToLongArray());
        Assert.Equal(DType.BFloat16, t.To(DType.BFloat16).DType);
        Assert.Equal(21.0, t.Sum().Item());
        Assert.Equal(new float[] { 6, 15 }, t.Sum([1]).ToFloatArray());
        Assert.Equal(new float[] { 3, 6 }, t.Max(1).ToFloatArray());
    }

    [Fact]
    public void Arithmetic_matches_hand_computation()
    {
        using var scope = DisposeScope.Begin();
        var a = Tensor.From([1f, 2, 3, 4], 2, 2);
        var b = Tensor.From([5f, 6, 7, 8], 2, 2);
        Assert.Equal(new float[] { 19, 22, 43, 50 }, a.MatMul(b).ToFloatArray());
        Assert.Equal(new float[] { 6, 8, 10, 12 }, (a + b).ToFloatArray());
        Assert.Equal(new float[] { 2, 4, 6, 8 }, (a * 2).ToFloatArray());
        Assert.Equal(new float[] { -1, -2, -3, -4 }, (-a).ToFloatArray());
        Assert.Equal(new float[] { 1, 4, 9, 16 }, a.Square().ToFloatArray());
        var sm = a.Softmax(1).ToFloatArray();
        Assert.Equal(1.0 / (1 + Math.E), sm[0], 6);
    }

    [Fact]
    public void Seeded_normal_is_reproducible_and_has_the_right_moments()
    {
        using var scope = DisposeScope.Begin();
        var a = Tensor.Normal([100_000], 0.5, 2.0, seed: 42).ToFloatArray();
        var b = Tensor.Normal([100_000], 0.5, 2.0, seed: 42).ToFloatArray();
        Assert.Equal(a, b);
        double mean = a.Average(v => (double)v);
        double std = Math.Sqrt(a.Average(v => (v - mean) * (v - mean)));
        Assert.InRange(mean, 0.47, 0.53);
        Assert.InRange(std, 1.97, 2.03);
        Assert.NotEqual(a, Tensor.Normal([100_000], 0.5, 2.0, seed: 43).ToFloatArray());
    }

    [Fact]
    public void Native_errors_are_typed_exceptions_and_the_process_survives()
    {
        using var scope = DisposeScope.Begin();
        var a = Tensor.Zeros([2, 3]);
        var b = Tensor.Zeros([4, 5]);
        var e = Assert.Throws<TorchException>(() => a.MatMul(b));
        Assert.Contains("shape", e.Message, StringComparison.OrdinalIgnoreCase);
        if (TorchRuntime.CudaDevices == 0)
        {
            Assert.Throws<TorchException>(() => a.To(Device.Cuda(0)));
            Assert.Contains("PLANNER_WITH_CUDA", Assert.Throws<TorchException>(() => TorchRuntime.CudaDeviceName(0)).Message);
            Assert.Contains("PLANNER_WITH_CUDA", Assert.Throws<TorchException>(() => TorchRuntime.CudaDeviceUuid(0)).Message);
        }
        else
        {
            Assert.False(string.IsNullOrWhiteSpace(TorchRuntime.CudaDeviceName(0)));
            Assert.Matches("^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", TorchRuntime.CudaDeviceUuid(0));
        }
        Assert.Throws<TorchException>(() => a.View(7));
        Assert.Throws<ArgumentException>(() => Tensor.From([1f, 2], 3));
        // The binding still works after the errors.
        Assert.Equal(0.0, (a + 0).Sum().Item());
    }

    [Fact]
    public void Autograd_backward_with_an_output_gradient_and_no_grad_scopes()
    {
        using var scope = DisposeScope.Begin();
        var x = Tensor.From([1f, 2, 3], 3);
        x.RequiresGrad = true;
        var y = x * x; // dy/dx = 2x
        y.Backward(Tensor.From([1f, 10, 100], 3));
        Assert.Equal(new float[] { 2, 40, 600 }, x.Grad!.ToFloatArray());
        x.ZeroGrad();
        Assert.Equal(new float[] { 0, 0, 0 }, x.Grad!.ToFloatArray());
        using (TorchRuntime.NoGrad())
            Assert.False((x * 2).RequiresGrad);
        Assert.True((x * 2).RequiresGrad);
        Assert.False(x.Detach().RequiresGrad);
        x.SetGrad(null);
        Assert.Null(x.Grad);
    }

    [Fact]
    public void A_freed_weight_restored_through_its_data_keeps_the_saved_graph_valid()
    {
        using var scope = DisposeScope.Begin();
        var values = Tensor.From([1f, 2, 3, 4], 2, 2);
        var w = values.Clone();
        w.RequiresGrad = true;
        var x = Tensor.From([1f, 1, 2, 0], 2, 2);
        x.RequiresGrad = true;
        var y = F.Linear(x, w).Sum(); // the graph saves w for x's gradient
        Assert.Equal(16, w.StorageBytes);
        w.FreeStorage();
        Assert.Equal(0, w.StorageBytes);
        Assert.Equal(new long[] { 2, 2 }, w.Shape);
        Assert.Throws<TorchException>(() => w.ToFloatArray());
        w.AllocateStorage();
        Assert.Equal(16, w.StorageBytes);
        w.AllocateStorage(); // holds its bytes: no-op
        using (var data = w.Data())
            data.CopyFrom(values);
        y.Backward();
        Assert.Equal(new float[] { 4, 6, 4, 6 }, x.Grad!.ToFloatArray()); // ones · w
        Assert.Equal(new float[] { 3, 1, 3, 1 }, w.Grad!.ToFloatArray()); // onesᵀ · x

        // Restoring through the tensor itself is an in-place change autograd refuses at the backward.
        var z = F.Linear(x, w).Sum();
        w.FreeStorage();
        w.AllocateStorage();
        w.CopyFrom(values);
        Assert.Throws<TorchException>(() => z.Backward());
    }

    [Fact]
    public void A_loop_of_training_steps_leaks_no_handles_or_memory()
    {
        var w = Tensor.Normal([256, 256], 0, 0.02, seed: 1);
        w.RequiresGrad = true;
        using var opt = Optimizer.AdamW([w], lr: 1e-3);
        var x = Tensor.Normal([64, 256], 0, 1, seed: 2);
        void Step()
        {
            using var step = DisposeScope.Begin();
            var loss = F.Linear(x, w).Tanh().Square().Mean();
            loss.Backward();
            opt.Step();
            opt.ZeroGrad();
        }
        for (int i = 0; i < 20; i++)
            Step(); // warm up allocator and optimizer state
        long tensors = TorchRuntime.LiveTensors, handles = NativeHandle.Live;
        var (rss, _) = TorchRuntime.Memory(Device.Cpu);
        for (int i = 0; i < 500; i++)
            Step();
        Assert.Equal(tensors, TorchRuntime.LiveTensors);
        Assert.Equal(handles, NativeHandle.Live);
        var (after, _) = TorchRuntime.Memory(Device.Cpu);
        Assert.True(after - rss < 64L << 20, $"resident memory grew by {(after - rss) >> 20} MiB over 500 steps");
        x.Dispose();
        w.Dispose();
    }

    [Fact]
    public void Dispose_scope_frees_its_tensors_and_keeps_what_is_kept()
    {
        long before = TorchRuntime.LiveTensors;
        Tensor kept;
        using (var scope = DisposeScope.Begin())
        {
            var a = Tensor.Zeros([10]);
            _ = a + 1;
            kept = scope.Keep(a * 2);
            Assert.Equal(2, scope.Count); // a and a + 1; a * 2 was kept
        }
        Assert.Equal(before + 1, TorchRuntime.LiveTensors);
        Assert.Equal(new float[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, kept.ToFloatArray());
        kept.Dispose();
        Assert.Equal(before, TorchRuntime.LiveTensors);
    }

    [Fact]
    public void Runtime_settings_and_clock()
    {
        TorchRuntime.Threads = 1;
        Assert.Equal(1, TorchRuntime.Threads);
        long t0 = TorchRuntime.NowNanoseconds();
        Thread.Sleep(5);
        Assert.True(TorchRuntime.NowNanoseconds() - t0 >= 4_000_000);
        Assert.Matches(@"^\d+\.\d+", TorchRuntime.Version);
        var (current, peak) = TorchRuntime.Memory(Device.Cpu);
        Assert.True(current > 0 && peak >= current / 2);
    }
}
