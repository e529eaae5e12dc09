using Planner.Cli.Commands;
using Xunit;

namespace Planner.Tests;

/// <summary>How rank processes are placed on cores and which allocator they run with.</summary>
public class RankProcessSettingsTests
{
    [Fact]
    public void Ranks_get_their_own_cores_round_robin()
    {
        Assert.Equal([0], CpuAffinity.CoresOf(0, 1, 2));
        Assert.Equal([1], CpuAffinity.CoresOf(1, 1, 2));
        Assert.Equal([0], CpuAffinity.CoresOf(2, 1, 2)); // more ranks than cores: they share, evenly
        Assert.Equal([2, 3], CpuAffinity.CoresOf(1, 2, 8));
        Assert.Equal([0, 1], CpuAffinity.CoresOf(0, 4, 2)); // more threads than cores: every core, once
    }

    [Fact]
    public void Ranks_run_with_an_allocator_that_keeps_freed_pages()
    {
        var settings = RankProcesses.AllocatorSettings.ToDictionary(x => x.Key, x => x.Value);
        if (File.Exists("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"))
        {
            Assert.Equal("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", settings["LD_PRELOAD"]);
            Assert.Contains("dirty_decay_ms:-1", settings["MALLOC_CONF"]);
        }
        else
            Assert.Equal("4294967296", settings["MALLOC_TRIM_THRESHOLD_"]);
    }

    [Fact]
    public void Pinning_applies_to_every_thread_of_the_process()
    {
        if (!OperatingSystem.IsLinux() || Environment.ProcessorCount < 2)
            return;
        string all = string.Join(',', Enumerable.Range(0, Environment.ProcessorCount));
        static IEnumerable<string> Allowed() => Directory.EnumerateDirectories("/proc/self/task")
            .Select(t => { try { return File.ReadLines(Path.Combine(t, "status")).First(l => l.StartsWith("Cpus_allowed_list")).Split(':')[1].Trim(); } catch (IOException) { return null; } })
            .Where(x => x is not null)!;
        try
        {
            Environment.SetEnvironmentVariable(CpuAffinity.Variable, "1");
            CpuAffinity.ApplyFromEnvironment();
            Assert.All(Allowed(), a => Assert.Equal("1", a));
        }
        finally
        {
            Environment.SetEnvironmentVariable(CpuAffinity.Variable, all);
            CpuAffinity.ApplyFromEnvironment();
            Environment.SetEnvironmentVariable(CpuAffinity.Variable, null);
        }
        Assert.Contains(Allowed(), a => a != "1");
    }
}
