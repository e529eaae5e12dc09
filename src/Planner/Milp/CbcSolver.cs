using System.Reflection;
using System.Runtime.InteropServices;

namespace Planner.Cli.Milp;

/// <summary>
/// COIN-OR CBC through its C interface (<c>Cbc_C_Interface.h</c>, Debian package <c>coinor-libcbc-dev</c>).
/// A model is built, solved once and freed per call: CBC's C API does not support reuse after solving.
/// </summary>
public sealed partial class CbcSolver : IMilpSolver
{
    private const string Library = "CbcSolver";

    /// <summary>CBC's solver keeps global state (its command-line driver): one solve at a time per process.</summary>
    private static readonly Lock SolveLock = new();

    static CbcSolver()
    {
        NativeLibrary.SetDllImportResolver(typeof(CbcSolver).Assembly, Resolve);
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != Library)
            return IntPtr.Zero;
        foreach (var candidate in new[] { "libCbcSolver.so.3", "libCbcSolver.so", "libCbcSolver.dylib", "CbcSolver" })
            if (NativeLibrary.TryLoad(candidate, assembly, path, out var handle))
                return handle;
        return IntPtr.Zero;
    }

    /// <summary>True when the CBC library can be loaded.</summary>
    public static bool IsAvailable
    {
        get
        {
            try
            {
                return Marshal.PtrToStringAnsi(Native.Cbc_getVersion()) is not null;
            }
            catch (DllNotFoundException)
            {
                return false;
            }
        }
    }

    /// <inheritdoc />
    public string Name => "CBC " + (Marshal.PtrToStringAnsi(Native.Cbc_getVersion()) ?? "?");

    /// <inheritdoc />
    public MilpSolution Solve(MilpProblem problem, double timeLimitSeconds = 10)
    {
        lock (SolveLock)
            return SolveAlone(problem, timeLimitSeconds);
    }

    private static MilpSolution SolveAlone(MilpProblem problem, double timeLimitSeconds)
    {
        IntPtr model;
        try
        {
            model = Native.Cbc_newModel();
        }
        catch (DllNotFoundException)
        {
            throw new InvalidOperationException("COIN-OR CBC is not installed (libCbcSolver.so.3); install the Debian package coinor-libcbc-dev, which ./planner and ./test do when run as root");
        }
        try
        {
            Native.Cbc_setLogLevel(model, 0);
            Native.Cbc_setMaximumSeconds(model, timeLimitSeconds);
            Native.Cbc_setObjSense(model, 1); // minimise
            // Stop within 1e-6 of the proven bound: far below the cost model's accuracy, and it spares CBC from
            // proving optimality across the many symmetric splits of identical stages.
            Native.Cbc_setAllowableFractionGap(model, 1e-6);
            foreach (var v in problem.Variables)
                Native.Cbc_addCol(model, v.Name, v.Lower, v.Upper, v.Objective, (byte)(v.Integer ? 1 : 0), 0, [], []);
            foreach (var row in problem.Rows)
            {
                var cols = row.Terms.Select(t => t.Variable).ToArray();
                var coefs = row.Terms.Select(t => t.Coefficient).ToArray();
                byte sense = row.Sense switch { RowSense.LessOrEqual => (byte)'L', RowSense.GreaterOrEqual => (byte)'G', _ => (byte)'E' };
                Native.Cbc_addRow(model, row.Name, cols.Length, cols, coefs, sense, row.Rhs);
            }
            if (problem.Start is { Count: > 0 } start)
            {
                var idx = start.Keys.ToArray();
                var val = idx.Select(i => start[i]).ToArray();
                Native.Cbc_setMIPStartI(model, idx.Length, idx, val);
            }
            Native.Cbc_solve(model);
            if (Native.Cbc_isProvenInfeasible(model) != 0)
                return new MilpSolution(MilpStatus.Infeasible, double.NaN, []);
            int n = problem.Variables.Count;
            IntPtr solution = Native.Cbc_getColSolution(model);
            if (solution == IntPtr.Zero)
                return new MilpSolution(MilpStatus.Unknown, double.NaN, []);
            var values = new double[n];
            Marshal.Copy(solution, values, 0, n);
            var status = Native.Cbc_isProvenOptimal(model) != 0 ? MilpStatus.Optimal : MilpStatus.Unknown;
            return new MilpSolution(status, Native.Cbc_getObjValue(model), values);
        }
        finally
        {
            Native.Cbc_deleteModel(model);
        }
    }

    private static partial class Native
    {
        [LibraryImport(Library)] internal static partial IntPtr Cbc_newModel();
        [LibraryImport(Library)] internal static partial void Cbc_deleteModel(IntPtr model);
        [LibraryImport(Library)] internal static partial IntPtr Cbc_getVersion();
        [LibraryImport(Library)] internal static partial void Cbc_setLogLevel(IntPtr model, int level);
        [LibraryImport(Library)] internal static partial void Cbc_setMaximumSeconds(IntPtr model, double seconds);
        [LibraryImport(Library)] internal static partial void Cbc_setObjSense(IntPtr model, double sense);
        [LibraryImport(Library)] internal static partial void Cbc_setAllowableFractionGap(IntPtr model, double gap);
        [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
        internal static partial void Cbc_addCol(IntPtr model, string name, double lb, double ub, double obj, byte isInteger, int nz, int[] rows, double[] coefs);
        [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
        internal static partial void Cbc_addRow(IntPtr model, string name, int nz, int[] cols, double[] coefs, byte sense, double rhs);
        [LibraryImport(Library)] internal static partial int Cbc_solve(IntPtr model);
        [LibraryImport(Library)] internal static partial void Cbc_setMIPStartI(IntPtr model, int count, int[] cols, double[] values);
        [LibraryImport(Library)] internal static partial int Cbc_isProvenOptimal(IntPtr model);
        [LibraryImport(Library)] internal static partial int Cbc_isProvenInfeasible(IntPtr model);
        [LibraryImport(Library)] internal static partial IntPtr Cbc_getColSolution(IntPtr model);
        [LibraryImport(Library)] internal static partial double Cbc_getObjValue(IntPtr model);
    }
}
