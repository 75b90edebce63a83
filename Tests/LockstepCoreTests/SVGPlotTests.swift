import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
@testable import LockstepCore

final class SVGPlotTests: XCTestCase {
    /// Three epochs as the trainer writes them, a resumed epoch 2 appended later, a summary line, a regression-style null.
    static let metrics = """
        {"event":"epoch","epoch":1,"step":100,"train_loss":0.9,"test_loss":0.7,"test_accuracy":0.74,"samples_per_second":5000.5,"seconds":3.1}
        {"event":"epoch","epoch":2,"step":200,"train_loss":0.6,"test_loss":0.55,"test_accuracy":0.8,"samples_per_second":5100,"seconds":6.2}
        {"event":"epoch","epoch":2,"step":200,"train_loss":0.5,"test_loss":0.52,"test_accuracy":0.81,"samples_per_second":5100,"seconds":6.2}

        {"event":"epoch","epoch":3,"step":300,"train_loss":0.4,"test_loss":0.5,"validation_loss":0.45,"test_accuracy":null,"validation_accuracy":0.83,"samples_per_second":5200,"seconds":9.3}
        {"event":"summary","test_accuracy":0.82,"test_loss":0.5,"train_loss":0.4}
        """

    func testParsesEpochRecordsLastOneWins() throws {
        let curves = try LearningCurves(jsonLines: Self.metrics, source: "metrics.jsonl")
        XCTAssertEqual(curves.losses.map(\.name), ["train", "validation", "test"])
        XCTAssertEqual(curves.losses[0], PlotSeries(name: "train", x: [1, 2, 3], y: [0.9, 0.5, 0.4], colour: LinePlot.palette[0]))
        // Each split keeps its colour across plots.
        XCTAssertEqual(curves.accuracies.map(\.colour), [LinePlot.palette[1], LinePlot.palette[2]])
        XCTAssertEqual(curves.losses[2].y, [0.7, 0.52, 0.5])
        // Validation only exists in epoch 3; earlier epochs are gaps (NaN), not zeros.
        XCTAssertTrue(curves.losses[1].y[0].isNaN && curves.losses[1].y[1].isNaN)
        XCTAssertEqual(curves.losses[1].y[2], 0.45)
        XCTAssertEqual(curves.accuracies.map(\.name), ["validation", "test"])
        XCTAssertEqual(curves.accuracies[1].y.prefix(2), [0.74, 0.81])
        XCTAssertTrue(curves.accuracies[1].y[2].isNaN, "null accuracy is a gap")
    }

    func testSVGHasAxesLinesAndLegend() throws {
        let curves = try LearningCurves(jsonLines: Self.metrics, source: "metrics.jsonl")
        let svg = curves.lossPlot().svg()
        XCTAssertTrue(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 3)
        for name in ["train", "validation", "test"] { XCTAssertTrue(svg.contains("data-name=\"\(name)\"")) }
        for text in [">Loss<", ">epoch<", ">loss<", ">train<", ">validation<", ">test<", ">1<", ">3<", ">0.4<", ">0.9<"] {
            XCTAssertTrue(svg.contains(text), "missing \(text)")
        }
        // It is well-formed XML.
        XCTAssertNoThrow(try XMLDocument(data: Data(svg.utf8)))
        let accuracy = try XCTUnwrap(curves.accuracyPlot()).svg()
        XCTAssertTrue(accuracy.contains(">accuracy<") && accuracy.contains("data-name=\"test\""))
    }

    func testWritesFilesAndSkipsAccuracyForRegression() throws {
        let directory = NSTemporaryDirectory() + "lockstep-plot-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let regression = """
            {"event":"epoch","epoch":1,"step":10,"train_loss":2.0,"test_loss":1.5,"test_accuracy":null,"samples_per_second":1,"seconds":1}
            {"event":"epoch","epoch":2,"step":20,"train_loss":1.0,"test_loss":1.1,"test_accuracy":null,"samples_per_second":1,"seconds":2}
            """
        try Data(regression.utf8).write(to: URL(fileURLWithPath: directory + "/metrics.jsonl"))
        let written = try LearningCurves.read(path: directory + "/metrics.jsonl").writeSVG(prefix: directory + "/run")
        XCTAssertEqual(written, [directory + "/run-loss.svg"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/run-loss.svg"))
        // To look at by hand: LOCKSTEP_PLOT_SAMPLE=/tmp/run [LOCKSTEP_PLOT_METRICS=metrics.jsonl] swift test --filter SVGPlot.
        let environment = ProcessInfo.processInfo.environment
        if let output = environment["LOCKSTEP_PLOT_SAMPLE"] {
            let curves = try environment["LOCKSTEP_PLOT_METRICS"].map(LearningCurves.read)
                ?? LearningCurves(jsonLines: Self.metrics, source: "sample")
            try curves.writeSVG(prefix: output)
        }
    }

    func testErrorsNameFileAndLine() {
        XCTAssertThrowsError(try LearningCurves(jsonLines: "{\"event\":\"epoch\",\"epoch\":1}\nnot json\n", source: "m.jsonl")) {
            XCTAssertTrue("\($0)".hasPrefix("m.jsonl:2: is not valid JSON"), "\($0)")
        }
        XCTAssertThrowsError(try LearningCurves(jsonLines: "[1, 2]", source: "m.jsonl")) {
            XCTAssertEqual("\($0)", "m.jsonl:1: is not a JSON object")
        }
        XCTAssertThrowsError(try LearningCurves(jsonLines: "{\"event\":\"summary\"}", source: "m.jsonl")) {
            XCTAssertTrue("\($0)".contains("no {\"event\":\"epoch\"} records"), "\($0)")
        }
        XCTAssertThrowsError(try LearningCurves.read(path: "/nonexistent/metrics.jsonl")) {
            XCTAssertTrue("\($0)".hasPrefix("/nonexistent/metrics.jsonl: cannot read"), "\($0)")
        }
    }

    func testRoundTicks() {
        let axis = LinePlot.axis(low: 0.37, high: 0.91, integers: false)
        XCTAssertEqual(axis.step, 0.2, accuracy: 1e-12)
        XCTAssertEqual(axis.low, 0.2, accuracy: 1e-12); XCTAssertEqual(axis.high, 1.0, accuracy: 1e-12)
        XCTAssertEqual(axis.ticks.map { LinePlot.label($0, step: axis.step) }, ["0.2", "0.4", "0.6", "0.8", "1.0"])
        let epochs = LinePlot.axis(low: 1, high: 3, integers: true)
        XCTAssertEqual(epochs.ticks, [1, 2, 3])
        // A single epoch still gets a non-empty range.
        let single = LinePlot.axis(low: 1, high: 1, integers: true)
        XCTAssertLessThan(single.low, 1); XCTAssertGreaterThan(single.high, 1)
        XCTAssertEqual(LinePlot.label(-1e-17, step: 0.5), "0.0")
    }
}
